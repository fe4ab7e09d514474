import Foundation

/// A standard-library-only Python reader for legacy (pre-zip) PyTorch state dicts, run by
/// `catdog-dist import`: it writes the float tensors, contiguous, as plain safetensors.
public enum TorchLegacyReader {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Runs the embedded reader on `pth`; returns the plain safetensors it wrote.
    public static func read(_ pth: String) throws -> SafeTensors.File {
        guard FileManager.default.fileExists(atPath: pth) else { throw Failure(description: "\(pth) does not exist") }
        let folder = NSTemporaryDirectory() + "catdog-import-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let script = folder + "/pth2st.py", output = folder + "/weights.safetensors"
        try Self.script.write(toFile: script, atomically: true, encoding: .utf8)
        let process = Process(), errors = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script, pth, output]
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do { try process.run() } catch { throw Failure(description: "cannot run python3 (needed to read .pth files): \(error)") }
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0, let data = FileManager.default.contents(atPath: output) else {
            throw Failure(description: message.split(separator: "\n").last.map(String.init) ?? "\(pth) could not be read")
        }
        return try SafeTensors.decode([UInt8](data))
    }



    static let script = #"""
"""Converts a legacy (pre-zip) PyTorch state dict to safetensors, with the standard library only.

The legacy format is five pickles in a row (magic number, protocol, system info, the state dict
whose tensors refer to storages by key, the list of storage keys), then each storage's bytes:
an 8-byte element count, then the data. Tensors are rebuilt with their offsets and strides
(many are stored non-contiguous), written contiguous as F32; integer tensors are dropped.
usage: python3 pth2st.py IN.pth OUT.safetensors
"""
import array, collections, json, pickle, struct, sys

MAGIC = 0x1950A86A20F9469CFC6C


class Storage:
    def __init__(self, key, kind, numel):
        self.key, self.kind, self.numel, self.data = key, kind, numel, None


class StorageType:
    def __init__(self, name):
        self.name = name


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def rebuild(storage, offset, size, stride, *rest):
    return Tensor(storage, offset, size, stride)


class Unpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return rebuild
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError("unexpected class %s.%s: not a plain PyTorch state dict" % (module, name))

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError("unexpected persistent id %r" % (pid,))
        _, kind, key, _location, numel = pid[:5]
        if key not in self.storages:
            self.storages[key] = Storage(key, kind.name if isinstance(kind, StorageType) else str(kind), numel)
        return self.storages[key]


def load(path):
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise SystemExit("%s is a zip-format PyTorch file; this importer reads the legacy format" % path)
        f.seek(0)
        try:
            magic = pickle.load(f)
        except Exception as e:
            raise SystemExit("%s is not a PyTorch checkpoint (%s)" % (path, e))
        if magic != MAGIC:
            raise SystemExit("%s is not a legacy PyTorch checkpoint (bad magic number)" % path)
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info
        storages = {}
        state = Unpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            (count,) = struct.unpack("<q", f.read(8))
            s = storages[key]
            code, width = ("f", 4) if s.kind == "FloatStorage" else ("q", 8)
            data = array.array(code)
            data.frombytes(f.read(count * width))
            s.data = data
    return state


def contiguous(t):
    values = t.storage.data
    out = array.array("f")
    def walk(dim, base):
        if dim == len(t.size):
            out.append(values[base])
            return
        step = t.stride[dim]
        if dim == len(t.size) - 1 and step == 1:
            out.extend(values[base : base + t.size[dim]])
            return
        for i in range(t.size[dim]):
            walk(dim + 1, base + i * step)
    walk(0, t.offset)
    return out


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    state = load(sys.argv[1])
    if not isinstance(state, dict):
        raise SystemExit("%s does not hold a state dict" % sys.argv[1])
    header, blobs, offset = {}, [], 0
    for name, t in state.items():
        if not isinstance(t, Tensor) or t.storage.kind != "FloatStorage":
            continue
        data = contiguous(t).tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.size), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"source": sys.argv[1]}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(sys.argv[2], "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for blob in blobs:
            f.write(blob)
    print("%d tensors, %d floats" % (len(blobs), offset // 4))


if __name__ == "__main__":
    main()
"""#
}
