// A file that only grows, for the registration journal.
//
// The journal's promise is that a line is on disk before its SUCCESS is
// sent, so `append` and `sync` are separate: many lines are appended, then
// one fdatasync covers them all (group commit). When a write fails partway
// (disk full), the file is cut back to its last good length, so a failed
// append leaves no partial line behind; the caller undoes the change it
// tried to record (should that cut fail too, `length` still ends at the
// last good append, for the caller to cut to). A new file's folder entry is
// synced once at creation, or the file itself could vanish in a crash.

import Glibc

public final class AppendFile {
    public let path: String
    private var fd: Int32
    /// Bytes in the file, all of them whole appends.
    public private(set) var length: Int

    /// Opens `path` for appending, creating it (mode 0640) if needed.
    public init(path: String) throws {
        let existed = FileSystem.fileExists(atPath: path)
        fd = try Posix.open(path: path, flags: O_WRONLY | O_CREAT | O_APPEND, mode: 0o640)
        do {
            length = Int(try Posix.fileSize(fd: fd))
            if !existed { try FileSystem.syncFolder(containing: path) }
        } catch {
            try? Posix.close(fd: fd)
            throw error
        }
        self.path = path
    }

    deinit { try? Posix.close(fd: fd) }

    /// Appends `bytes` whole, or throws and leaves the file as it was.
    public func append(_ bytes: [UInt8]) throws {
        do {
            try Posix.writeAll(fd: fd, bytes: bytes)
            length += bytes.count
        } catch {
            try? Posix.truncate(fd: fd, length: length)
            throw error
        }
    }

    /// Whether `path` names another file than the open one now (a rename
    /// replaced it), or nothing.
    public var isReplaced: Bool {
        guard let open = try? Posix.status(fd: fd) else { return false }
        guard let named = try? Posix.stat(path: path) else { return true }
        return open.st_dev != named.st_dev || open.st_ino != named.st_ino
    }

    /// Makes every append so far durable (fdatasync).
    public func sync() throws {
        try Posix.fdatasync(fd: fd)
    }

    /// Cuts the file to `newLength` bytes and syncs that.
    public func truncate(to newLength: Int) throws {
        try Posix.truncate(fd: fd, length: newLength)
        try Posix.fdatasync(fd: fd)
        length = newLength
    }
}
