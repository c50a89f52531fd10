"""Reads every daf array of a directory with numpy, the way a user would:
dtype and shape from NAME.yaml, data through np.memmap. Prints one JSON
object: {name: {"kind", "shape", "dtype" | per-file dtypes, sha256 of the
data bytes}}. Items numpy cannot load (corrupt ones) are left out."""
import hashlib
import json
import os
import sys

import numpy as np
import yaml


def load(d, name, meta):
    shape = tuple(meta["shape"])
    if "dtype" in meta and os.path.exists(os.path.join(d, name + ".array")):
        a = np.memmap(os.path.join(d, name + ".array"), dtype=meta["dtype"], mode="r", shape=shape)
        return {"kind": "dense", "shape": list(a.shape), "dtype": str(a.dtype),
                "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}
    if "data_dtype" in meta:
        item = {"kind": "sparse", "shape": list(shape), "nnz": meta["nnz"]}
        for part in ("data", "indices", "indptr"):
            a = np.memmap(os.path.join(d, name + "." + part), dtype=meta[part + "_dtype"], mode="r")
            item[part] = "%s:%s" % (a.dtype, hashlib.sha256(a.tobytes()).hexdigest())
        indptr = np.memmap(os.path.join(d, name + ".indptr"), dtype=meta["indptr_dtype"], mode="r")
        assert indptr[0] == 0 and indptr[-1] == meta["nnz"] and len(indptr) == shape[0] + 1
        return item
    return None


def main(d):
    out = {}
    for f in sorted(os.listdir(d)):
        if not f.endswith(".yaml"):
            continue
        name = f[: -len(".yaml")]
        try:
            with open(os.path.join(d, f)) as fh:
                meta = yaml.safe_load(fh)
            if isinstance(meta, dict) and "shape" in meta:
                item = load(d, name, meta)
                if item is not None:
                    out[name] = item
        except (yaml.YAMLError, TypeError, ValueError, KeyError, AssertionError):
            pass  # a corrupt item: numpy cannot load it
    print(json.dumps(out, sort_keys=True))


main(sys.argv[1])
