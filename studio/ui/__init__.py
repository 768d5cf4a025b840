"""The Gradio web app: one module per tab, the memory panel and shared widgets; never imports torch.

Build the page with `studio.ui.app.build_app(studio)`; launch options come from `studio.ui.launch`.
"""
