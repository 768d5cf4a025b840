"""Modules that import torch, transformers or torch.ao at their top, for the classes and functions that must live at
a module's top level (Dynamo's precompile saves them by their import path: models.compiled). A package of their
own because the catalog imports every module of `models` at start-up (studio.catalog.Catalog.discover), and these
would bring torch with them; a subpackage's modules are imported only when a model needs them."""
