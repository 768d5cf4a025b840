"""The page's theme and CSS. Colours come from the theme's variables, so dark mode (?__theme=dark) follows."""

from __future__ import annotations

import gradio as gr

# System fonts: the studio runs offline, and the default theme would fetch its fonts from Google.
SYSTEM_FONTS = ("ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif")
MONO_FONTS = ("ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace")


def page_theme() -> gr.themes.Base:
    return gr.themes.Default(primary_hue="indigo", secondary_hue="indigo", neutral_hue="slate",
                             font=list(SYSTEM_FONTS), font_mono=list(MONO_FONTS))


CSS = """
/* ---- header ---- */
.studio-header { margin-bottom: 2px; }
.studio-header h1 { font-size: 1.5rem; margin: 0 0 2px 0; }
.studio-header p { margin: 0; color: var(--body-text-color-subdued); font-size: var(--text-md); }

/* ---- tabs ---- */
.studio-note p { font-size: var(--text-sm); color: var(--body-text-color-subdued); margin: 0; line-height: 1.4; }
.studio-note code { font-size: var(--text-sm); }
.studio-seed-row { align-items: flex-end !important; }
.studio-seed-row > button { margin-bottom: 10px; }
.studio-empty { padding: var(--spacing-xxl) 0; }
/* A mode whose settings are all elsewhere (a repaint's range is under its clip) leaves the column beside Format
   empty (gradio leaves hidden components out of the page): the column goes, and Format keeps its width. The row
   of settings about a clip goes too while it is empty (it kept a gap of its own above Advanced). */
.studio-settings:not(:has(.block)), .studio-clip-settings:not(:has(.block)) { display: none !important; }
.studio-settings-row:not(:has(> .studio-settings .block)) > .form { flex-grow: 0 !important; }  /* :has in :has is void */

/* ---- estimate ---- */
/* Its block keeps the figure's height from the first frame: the HTML's own min-height applies only once gradio has
   rendered its content, and the estimate's first event (on page load) can be pending before that, which left the
   block 56 px high for a moment and moved Generate 9 px when the figure came. ESTIMATE_MIN_HEIGHT in tab.py. */
.studio-estimate-block { min-height: 112px; }
.studio-estimate { border: 1px solid var(--border-color-primary); border-left: 4px solid var(--color-accent);
  border-radius: var(--radius-md); padding: 8px 12px; background: var(--block-background-fill);
  font-size: var(--text-md); line-height: 1.45; overflow-wrap: anywhere; }
.studio-estimate-title { display: block; font-size: var(--text-xs); text-transform: uppercase; letter-spacing: .06em;
  color: var(--body-text-color-subdued); margin-bottom: 2px; }
.studio-estimate-warn { border-left-color: #d97706; }
.studio-estimate-bad { border-left-color: var(--error-text-color, #dc2626); color: var(--error-text-color, #dc2626); }
.studio-estimate-wait { color: var(--body-text-color-subdued); border-left-color: var(--border-color-primary); }
.studio-meter { height: 4px; border-radius: 2px; background: var(--border-color-primary); margin-top: 6px; overflow: hidden; }
.studio-meter > div { height: 100%; background: var(--color-accent); }

/* ---- live player (studio/ui/live.py) and the Stream switch ---- */
.studio-live { display: flex; align-items: center; gap: 8px; padding: 6px 10px; border-radius: var(--radius-md);
  border: 1px solid var(--border-color-primary); background: var(--block-background-fill); font-size: var(--text-sm); }
.studio-live[hidden] { display: none; }
.studio-live-block:has(.studio-live[hidden]) { display: none !important; }  /* no gap above Result while idle */
.studio-live-text { flex: 1; min-width: 0; overflow-wrap: anywhere; }
.studio-live-dot { width: 10px; height: 10px; border-radius: 50%; flex: none; background: var(--border-color-primary); }
.studio-live[data-state="playing"] .studio-live-dot { background: #16a34a; animation: studio-pulse 1.2s ease-in-out infinite; }
.studio-live[data-state="waiting"] .studio-live-dot, .studio-live[data-state="gap"] .studio-live-dot { background: #d97706; }
.studio-live-stop { flex: none; padding: 2px 10px; border-radius: var(--radius-sm); font-size: var(--text-sm);
  border: 1px solid var(--border-color-primary); background: var(--button-secondary-background-fill); cursor: pointer; }
.studio-live-stop[hidden] { display: none; }
@keyframes studio-pulse { 50% { opacity: .35; } }
@media (prefers-reduced-motion: reduce) { .studio-live-dot { animation: none !important; } }

/* ---- result table ---- */
.studio-details table { font-size: var(--text-sm); width: 100%; border-collapse: collapse; table-layout: fixed;
  border: none !important; margin: 0; }
.studio-details thead { display: none; }
.studio-details td { padding: 3px 8px !important; overflow-wrap: anywhere; vertical-align: top; border: none !important;
  border-bottom: 1px solid var(--border-color-primary) !important; }
.studio-details tr { background: transparent !important; border: none !important; }
.studio-details tr:last-child td { border-bottom: none !important; }
.studio-details td:first-child { white-space: nowrap; color: var(--body-text-color-subdued); width: 7.5em; }

/* ---- memory panel ---- */
.studio-panel-title h3 { margin: 0 0 4px 0; }
.mem { display: flex; flex-direction: column; gap: 8px; font-size: var(--text-sm); color: var(--body-text-color); }
.mem-device { font-weight: 600; font-size: var(--text-md); overflow-wrap: anywhere; }
/* The bar is the device's total; the light part is the budget, the striped rest is reserved or used by others. */
.mem-bar { position: relative; height: 12px; border-radius: 6px; overflow: hidden;
  background: repeating-linear-gradient(135deg, color-mix(in srgb, var(--body-text-color) 22%, transparent) 0 4px,
    color-mix(in srgb, var(--body-text-color) 10%, transparent) 4px 8px); }
.mem-budget { position: absolute; left: 0; top: 0; bottom: 0;
  background: color-mix(in srgb, var(--body-text-color) 12%, var(--background-fill-primary)); }
.mem-used { position: absolute; left: 0; top: 0; bottom: 0; background: var(--color-accent); transition: width .4s ease; }
/* The icon colour: the dark theme's error text colour is near-white, which reads as free room, not "over". */
.mem-used.mem-over { background: var(--error-icon-color, #dc2626); }
.mem-legend { display: flex; justify-content: space-between; gap: 6px; flex-wrap: wrap; color: var(--body-text-color-subdued); }
.mem-legend b { color: var(--body-text-color); }
.mem-ram, .mem-empty, .mem-note { color: var(--body-text-color-subdued); }
.mem-note { font-size: var(--text-xs); line-height: 1.35; margin-top: -4px; }
.mem-models { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 6px; }
.mem-model { border: 1px solid var(--border-color-primary); border-radius: var(--radius-md); padding: 6px 8px;
  background: var(--block-background-fill); margin: 0; }
.mem-model::marker { content: none; }
.mem-line { display: flex; justify-content: space-between; align-items: baseline; gap: 6px; }
.mem-name { font-weight: 600; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; min-width: 0; }
.mem-size { font-variant-numeric: tabular-nums; white-space: nowrap; }
.mem-sub { color: var(--body-text-color-subdued); font-size: var(--text-xs); margin-top: 2px; }
.mem-state { border-radius: 999px; padding: 0 7px; border: 1px solid var(--border-color-primary); white-space: nowrap; }
.mem-state-in-use { background: var(--color-accent); color: white; border-color: transparent; }
.mem-state-on-device { border-color: var(--color-accent); color: var(--color-accent); }
.mem-state-loading, .mem-state-downloading { border-color: #d97706; color: #d97706; }
.mem-when { text-align: right; }
.mem-actions { display: flex; gap: 6px; margin-top: 6px; }
.mem-btn { font-size: var(--text-xs); padding: 2px 10px; border-radius: var(--radius-sm);
  border: 1px solid var(--button-secondary-border-color, var(--border-color-primary));
  background: var(--button-secondary-background-fill); color: var(--button-secondary-text-color); cursor: pointer; }
.mem-btn:hover:not([disabled]) { background: var(--button-secondary-background-fill-hover); }
.mem-btn[disabled] { opacity: .45; cursor: default; }
.mem-pin[aria-pressed="true"] { background: var(--color-accent); color: white; border-color: transparent; }
.mem-unload-all { align-self: stretch; padding: 5px 10px; font-size: var(--text-sm); }
/* Several devices: one block each (name, bar, its models), then the models on none; a rule between blocks. */
.mem-multi { gap: 12px; }
.mem-dev { display: flex; flex-direction: column; gap: 8px; min-width: 0; padding-top: 10px;
  border-top: 1px solid var(--border-color-primary); }
.mem-dev:first-child { padding-top: 0; border-top: none; }
/* ---- dropdowns: gradio draws the caret over the input's right end, so long text ran under it; the caret moves
   to the edge and the text stops before it (with an ellipsis), leaving a narrow box ("WAV") its room ---- */
.secondary-wrap > input[role="combobox"] { padding-right: 14px; text-overflow: ellipsis; }
.secondary-wrap > input[role="combobox"] + .icon-wrap { right: 8px; }

/* ---- narrow screens (a phone): gradio's sidebar then covers the whole page when open; it starts closed
   (memory_panel.py), its toggle is a thumb-sized target, and nothing sits under it. ---- */
@media (max-width: 768px) {
  #memory-sidebar > .toggle-button { width: 44px; height: 44px; }
  #memory-sidebar .sidebar-content { padding-left: 56px !important; }
  .studio-header { padding-right: 48px; }
}
/* ---- history ---- */
.studio-history-foot { align-items: center !important; }
.hist-list { list-style: none; margin: 0; padding: 0; display: flex; flex-direction: column; gap: 4px; }
.hist-list li { margin: 0; padding: 0; }
.hist-list li::marker { content: none; }
.hist-row { width: 100%; display: grid; grid-template-columns: minmax(0, 1fr) auto; column-gap: 12px; row-gap: 2px;
  text-align: left; padding: 7px 12px; font: inherit; font-size: var(--text-sm); color: var(--body-text-color);
  background: var(--block-background-fill); cursor: pointer;
  border: 1px solid var(--border-color-primary); border-radius: var(--radius-md); }
.hist-row:hover { border-color: var(--color-accent); }
.hist-row.hist-selected { border-color: var(--color-accent); box-shadow: inset 3px 0 0 var(--color-accent);
  background: color-mix(in srgb, var(--color-accent) 10%, var(--block-background-fill)); }
.hist-prompt { font-weight: 500; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.hist-length { color: var(--body-text-color-subdued); font-variant-numeric: tabular-nums; white-space: nowrap;
  text-align: right; }
.hist-meta { grid-column: 1 / -1; color: var(--body-text-color-subdued); font-size: var(--text-xs);
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.studio-actions { gap: 8px !important; }
"""
