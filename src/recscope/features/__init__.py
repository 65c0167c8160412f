"""Features: what an item token is built from. Attribute vocabularies (``attributes``) and
item text encoded by a pretrained language model (``text``)."""
