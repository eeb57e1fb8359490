"""The names of data/'s options that config/ checks, kept apart from the modules that
implement them (they import hpcgen.config): sources.py, shards.py read them from here.

A leaf: it imports nothing of hpcgen, so config/ (which data/ imports) may import it.
"""

# data.name: one configs/data/<name>.yaml each; sources.open_source opens each kind
DATA_SOURCES = ("synthetic", "lsun_bedroom", "folder")
# data.filter -> the PIL Image.Resampling member that shards.preprocess resizes with
FILTERS = {"lanczos": "LANCZOS", "box": "BOX", "bicubic": "BICUBIC", "bilinear": "BILINEAR"}
# data.format -> the member name of each sample in a shard's tar (shards.write_shard)
EXTENSIONS = {"png": "img.png", "jpeg": "img.jpg", "webp": "img.webp"}
