"""Rewrites a legacy PyTorch state dict in the zip format of torch.save (PyTorch >= 1.6), with
the standard library only: the tests check that `catdog-dist import` reads both formats alike.

usage: python3 legacy_to_zip.py IN.pth OUT.pth
The input is the project's own download (trusted); its pickles are read with an unpickler that
still allows only the names a state dict needs. Storages keep their keys, offsets and strides.
"""
import collections, pickle, struct, sys, types, zipfile

torch = types.ModuleType("torch")
torch_utils = types.ModuleType("torch._utils")
sys.modules["torch"], sys.modules["torch._utils"] = torch, torch_utils


class FloatStorage:
    pass


class LongStorage:
    pass


FloatStorage.__module__ = LongStorage.__module__ = "torch"
torch.FloatStorage, torch.LongStorage = FloatStorage, LongStorage


class Storage:
    def __init__(self, kind, key, numel):
        self.kind, self.key, self.numel, self.data = kind, key, numel, b""


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __reduce__(self):
        return (_rebuild_tensor_v2, (self.storage, self.offset, self.size, self.stride, False, collections.OrderedDict()))


def _rebuild_tensor_v2(storage, offset, size, stride, *rest):
    return Tensor(storage, offset, size, stride)


_rebuild_tensor_v2.__module__ = "torch._utils"
torch_utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class Reader(pickle.Unpickler):
    storages = {}

    def find_class(self, module, name):
        allowed = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2, ("collections", "OrderedDict"): collections.OrderedDict,
                   ("torch", "FloatStorage"): FloatStorage, ("torch", "LongStorage"): LongStorage}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError("unexpected %s.%s" % (module, name))
        return allowed[(module, name)]

    def persistent_load(self, pid):
        _, kind, key, _location, numel = pid[:5]
        return self.storages.setdefault(key, Storage(kind, key, numel))


class Writer(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None


def main():
    src, dst = sys.argv[1:3]
    with open(src, "rb") as f:
        for _ in range(3):
            pickle.load(f)
        reader = Reader(f)
        state = reader.load()
        keys = pickle.load(f)
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            s = reader.storages[key]
            s.data = f.read(count * (4 if s.kind is FloatStorage else 8))
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        import io
        buffer = io.BytesIO()
        Writer(buffer, protocol=2).dump(state)
        z.writestr("archive/data.pkl", buffer.getvalue())
        z.writestr("archive/version", "3\n")
        for key, s in reader.storages.items():
            z.writestr("archive/data/%s" % key, s.data)
    print("%d tensors" % len(state))


if __name__ == "__main__":
    main()
