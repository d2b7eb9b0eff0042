// Whole-file reads and crash-safe replacement, for the config and the registry snapshot.
//
// The registry snapshot must survive a crash or power cut at any instant:
// either the old file or the new one, never a torn mix. So a new version is
// written to a temporary file in the same folder (rename is atomic only
// within one filesystem), flushed to disk, renamed over the old one, and the
// folder is flushed so the rename itself is durable. Files are small, so
// reads take the whole file at once.

import CLinux
import Glibc

// MARK: - Files

public enum FileSystem {
    /// The whole file, or nil if it does not exist (ENOENT). Anything else,
    /// such as EACCES, EISDIR or ENOTDIR, is thrown.
    public static func readFile(atPath path: String) throws -> [UInt8]? {
        let fd: Int32
        do {
            fd = try Posix.open(path: path, flags: O_RDONLY)
        } catch let error as SystemError where error.errno == ENOENT {
            return nil
        }
        defer { try? Posix.close(fd: fd) }
        var contents: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = try chunk.withUnsafeMutableBytes { buffer in
                try syscall("read(\(path))") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
            }
            if count == 0 { return contents }
            contents += chunk[..<count]
        }
    }

    /// Replaces the file at `path` with `bytes` so that, after a crash at any
    /// point, the path holds either the old contents or the new ones.
    ///
    /// Writes `.<name>.tmp-<pid>` next to it, fsyncs it, renames it over
    /// `path` and fsyncs the folder. If anything fails before the rename, the
    /// temporary file is removed, the old file is untouched, and the error is
    /// thrown. Failing to flush the folder after the rename is thrown too,
    /// though the new contents are in place by then. `mode` is masked by the
    /// umask. The temporary name is per process, so one process must not
    /// write the same path from two threads at once.
    public static func writeAtomically(_ bytes: [UInt8], toPath path: String, mode: mode_t = 0o640) throws {
        guard let (folder, name) = split(path) else {
            throw SystemError(errno: EISDIR, call: "writeAtomically(\(path))")
        }
        let temporary = (folder == "/" ? "/" : folder + "/") + ".\(name).tmp-\(Posix.processID())"
        // O_NOFOLLOW: never write through a symlink someone planted at the temporary name.
        let fd = try Posix.open(path: temporary, flags: O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode: mode)
        var isOpen = true
        do {
            // In steps of 2 MiB, each handed to writeback as soon as it is
            // written (and the one before waited for): a 48 MB snapshot then
            // never piles up as dirty memory for one long fsync, which would
            // stall every other sync on the file system, the journal's too.
            let step = 2 << 20
            try bytes.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let end = min(offset + step, buffer.count)
                    while offset < end {
                        offset += try syscall("write(\(temporary))") {
                            Glibc.write(fd, buffer.baseAddress! + offset, end - offset)
                        }
                    }
                    // Only pacing: the fsync below is what makes the file durable.
                    let start = (offset - 1) / step * step
                    try? Posix.syncFileRange(fd: fd, offset: start, length: offset - start, flags: CHATD_SYNC_FILE_RANGE_WRITE)
                    if start >= step {
                        let flags = CHATD_SYNC_FILE_RANGE_WAIT_BEFORE | CHATD_SYNC_FILE_RANGE_WRITE
                            | CHATD_SYNC_FILE_RANGE_WAIT_AFTER
                        try? Posix.syncFileRange(fd: fd, offset: start - step, length: step, flags: flags)
                    }
                }
            }
            _ = try syscall("fsync(\(temporary))") { Glibc.fsync(fd) }
            isOpen = false
            // close can report a delayed write error (NFS), so it is checked before the rename.
            try Posix.close(fd: fd)
            try Posix.rename(from: temporary, to: path)
        } catch {
            if isOpen { try? Posix.close(fd: fd) }
            try? Posix.unlink(path: temporary)
            throw error
        }
        try syncFolder(folder)
    }

    /// Creates `path` and any missing parents, like `mkdir -p`. Existing
    /// folders are fine; an existing non-folder in the way throws ENOTDIR.
    public static func createDirectories(atPath path: String, mode: mode_t = 0o755) throws {
        guard !path.isEmpty else { throw SystemError(errno: ENOENT, call: "mkdir()") }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            // Checked first so that existing parents on a read-only or
            // unwritable filesystem are not reported as EROFS or EACCES.
            if !isDirectory(atPath: prefix) {
                do {
                    try Posix.mkdir(path: prefix, mode: mode)
                } catch let error as SystemError where error.errno == EEXIST {
                    // Lost a race with another creator, or a file is in the way.
                    guard isDirectory(atPath: prefix) else {
                        throw SystemError(errno: ENOTDIR, call: "mkdir(\(prefix))")
                    }
                }
            }
            prefix += "/"
        }
    }

    /// Cuts the file at `path` to `length` bytes and syncs it (for a torn journal tail).
    public static func truncate(atPath path: String, length: Int) throws {
        let fd = try Posix.open(path: path, flags: O_WRONLY)
        defer { try? Posix.close(fd: fd) }
        try Posix.truncate(fd: fd, length: length)
        try Posix.fsync(fd: fd)
    }

    /// Whether anything (file, folder, ...) exists at `path`, following symlinks.
    public static func fileExists(atPath path: String) -> Bool {
        (try? Posix.stat(path: path)) != nil
    }

    public static func isDirectory(atPath path: String) -> Bool {
        guard let info = try? Posix.stat(path: path) else { return false }
        return info.st_mode & S_IFMT == S_IFDIR
    }

    private static let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name)!

    /// The names in a folder, without `.` and `..`, in no particular order.
    public static func contentsOfDirectory(atPath path: String) throws -> [String] {
        guard let directory = opendir(path) else {
            throw SystemError(errno: Glibc.errno, call: "opendir(\(path))")
        }
        defer { closedir(directory) }
        var names: [String] = []
        while true {
            // readdir tells the end from a failure only through errno, so it is cleared first.
            Glibc.errno = 0
            guard let entry = readdir(directory) else {
                if Glibc.errno != 0 { throw SystemError(errno: Glibc.errno, call: "readdir(\(path))") }
                return names
            }
            // The name is read from its place, up to its NUL. Copying the
            // field (256 bytes) would read past a short record, and glibc
            // packs records at their real length, so the last one can end
            // its buffer and the copy fault (Foundation's Process.run() in
            // Swift 6.3.1 has that very bug).
            let name = String(cString: (UnsafeRawPointer(entry) + Self.nameOffset).assumingMemoryBound(to: CChar.self))
            if name != "." && name != ".." { names.append(name) }
        }
    }

    /// Removes a file, or a folder and everything in it, like `rm -r`;
    /// symlinks are removed, not followed. A missing path is not an error.
    public static func removeItem(atPath path: String) throws {
        var info = Glibc.stat()
        if fstatat(AT_FDCWD, path, &info, AT_SYMLINK_NOFOLLOW) != 0 {
            if Glibc.errno == ENOENT { return }
            throw SystemError(errno: Glibc.errno, call: "lstat(\(path))")
        }
        if info.st_mode & S_IFMT == S_IFDIR {
            for name in try contentsOfDirectory(atPath: path) {
                try removeItem(atPath: path + "/" + name)
            }
            _ = try syscall("rmdir(\(path))") { rmdir(path) }
        } else {
            try Posix.unlink(path: path)
        }
    }

    /// A new, empty, private (0700) folder under $TMPDIR or /tmp, named
    /// `<prefix>.XXXXXX`; the caller removes it.
    public static func makeTemporaryDirectory(prefix: String = "chatd") throws -> String {
        let base = getenv("TMPDIR").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array("\(base)/\(prefix).XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard let created else { throw SystemError(errno: Glibc.errno, call: "mkdtemp(\(base))") }
        return String(cString: created)
    }

    // MARK: Helpers

    /// The folder and last component of `path`; nil when it ends in a slash or names nothing.
    static func split(_ path: String) -> (folder: String, name: String)? {
        guard let last = path.split(separator: "/", omittingEmptySubsequences: false).last,
            !last.isEmpty, last != ".", last != ".."
        else { return nil }
        let folder = path.dropLast(last.count)
        if folder.isEmpty { return (".", String(last)) }
        if folder == "/" { return ("/", String(last)) }
        return (String(folder.dropLast()), String(last))
    }

    /// Makes the folder entry of `path` durable (after a rename or unlink).
    public static func syncFolder(containing path: String) throws {
        guard let (folder, _) = split(path) else { throw SystemError(errno: EISDIR, call: "fsync(\(path))") }
        try syncFolder(folder)
    }

    /// Makes a rename in `folder` durable.
    static func syncFolder(_ folder: String) throws {
        let fd = try Posix.open(path: folder, flags: O_RDONLY | O_DIRECTORY)
        defer { try? Posix.close(fd: fd) }
        do {
            _ = try syscall("fsync(\(folder))") { Glibc.fsync(fd) }
        } catch let error as SystemError where error.errno == EINVAL {
            // Some filesystems cannot fsync a folder; the rename has happened regardless.
        }
    }
}
