"""The poller's state: the interface (``base``), its records (``models``), one package per backend.

``open.open_store`` opens the backend the state config names; ``sqlite/`` keeps it in one local
file. Import each name from the module that defines it.
"""
