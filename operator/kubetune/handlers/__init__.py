"""kopf handlers: decorators only, each a few lines calling one reconcile() per kind.

Importing this package registers every handler (`kopf run -m kubetune.handlers`).
"""

from kubetune.handlers import children, finetunejob, lifecycle, modeldeployment

__all__ = ["children", "finetunejob", "lifecycle", "modeldeployment"]
