// Tests for whole-file reads, atomic replacement and folder creation.
//
// Tests run as root, so permission bits cannot make a write fail; failures
// are provoked with paths the kernel refuses for everyone instead (a file
// used as a folder, a folder where a file should be).

import ChatSystem
import Glibc
import Testing

// MARK: - Helpers

/// A fresh temporary folder for one test; the test removes it with `defer`
/// (a class with a deinit could be released before the test's last use of the path).
private func makeFolder() throws -> String {
    try FileSystem.makeTemporaryDirectory(prefix: "chatsystem-tests")
}

// MARK: - Reading

@Suite struct ReadFileTests {
    @Test func missingFileIsNil() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        #expect(try FileSystem.readFile(atPath: folder + "/absent") == nil)
    }

    @Test func folderIsAnError() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let error = try #require(throws: SystemError.self) { try FileSystem.readFile(atPath: folder) }
        #expect(error.errno == EISDIR)
    }

    @Test func fileUsedAsFolderIsAnErrorNotNil() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        try FileSystem.writeAtomically([1], toPath: folder + "/file")
        let error = try #require(throws: SystemError.self) {
            try FileSystem.readFile(atPath: folder + "/file/inner")
        }
        #expect(error.errno == ENOTDIR)
    }
}

// MARK: - Atomic writes

@Suite struct WriteAtomicallyTests {
    @Test(arguments: [0, 1, 70_000, 300_000])
    func writesAndReadsBack(size: Int) throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let path = folder + "/registry.json"
        let contents = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try FileSystem.writeAtomically(contents, toPath: path)
        #expect(try FileSystem.readFile(atPath: path) == contents)
        #expect(try FileSystem.contentsOfDirectory(atPath: folder) == ["registry.json"])
    }

    @Test func replacesContentAndLeavesNoTemporaryFile() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let path = folder + "/registry.json"
        try FileSystem.writeAtomically(Array("old, and longer".utf8), toPath: path)
        try FileSystem.writeAtomically(Array("new".utf8), toPath: path)
        #expect(try FileSystem.readFile(atPath: path) == Array("new".utf8))
        #expect(try FileSystem.contentsOfDirectory(atPath: folder) == ["registry.json"])
    }

    @Test func appliesMode() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let path = folder + "/secret"
        try FileSystem.writeAtomically([1], toPath: path, mode: 0o600)
        #expect(try Posix.stat(path: path).st_mode & 0o777 == 0o600)
    }

    @Test func missingFolderFailsWithoutCreatingAnything() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let error = try #require(throws: SystemError.self) {
            try FileSystem.writeAtomically([1], toPath: folder + "/absent/registry.json")
        }
        #expect(error.errno == ENOENT)
        #expect(try FileSystem.contentsOfDirectory(atPath: folder).isEmpty)
    }

    @Test func fileUsedAsFolderFails() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        try FileSystem.writeAtomically([1], toPath: folder + "/plain")
        let error = try #require(throws: SystemError.self) {
            try FileSystem.writeAtomically([2], toPath: folder + "/plain/registry.json")
        }
        #expect(error.errno == ENOTDIR)
        #expect(try FileSystem.readFile(atPath: folder + "/plain") == [1])
    }

    @Test func unwritableTemporaryLeavesOldFileIntact() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let path = folder + "/registry.json"
        try FileSystem.writeAtomically(Array("old".utf8), toPath: path)
        // A folder squatting on the temporary name makes open fail with EISDIR, even for root.
        let squatter = folder + "/.registry.json.tmp-\(Posix.processID())"
        try FileSystem.createDirectories(atPath: squatter)
        let error = try #require(throws: SystemError.self) {
            try FileSystem.writeAtomically(Array("new".utf8), toPath: path)
        }
        #expect(error.errno == EISDIR)
        #expect(try FileSystem.readFile(atPath: path) == Array("old".utf8))
    }

    @Test func failedRenameRemovesTemporaryFile() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        // The target is a non-empty folder: everything succeeds up to the rename.
        let path = folder + "/target"
        try FileSystem.createDirectories(atPath: path + "/inside")
        #expect(throws: SystemError.self) { try FileSystem.writeAtomically([1], toPath: path) }
        #expect(try FileSystem.contentsOfDirectory(atPath: folder) == ["target"])
        #expect(FileSystem.isDirectory(atPath: path + "/inside"))
    }

    @Test func pathEndingInSlashIsRejected() throws {
        let error = try #require(throws: SystemError.self) {
            try FileSystem.writeAtomically([1], toPath: "/tmp/folder/")
        }
        #expect(error.errno == EISDIR)
    }
}

// MARK: - Folders

@Suite struct FolderTests {
    @Test func createDirectoriesMakesEveryLevelAndIsIdempotent() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let deep = folder + "/a/b/c"
        try FileSystem.createDirectories(atPath: deep, mode: 0o750)
        #expect(FileSystem.isDirectory(atPath: deep))
        #expect(try Posix.stat(path: folder + "/a").st_mode & 0o777 == 0o750)
        try FileSystem.createDirectories(atPath: deep)
        try FileSystem.createDirectories(atPath: deep + "/")
        #expect(try FileSystem.contentsOfDirectory(atPath: folder + "/a/b") == ["c"])
    }

    /// 2,000 entries fill glibc's 32 KiB readdir buffer, so records sit at
    /// its very end: a name must be read to its NUL, never as the declared
    /// 256 bytes (AddressSanitizer, in `make test-sanitize`, sees an
    /// overrun; without it, it faults when the buffer ends a mapping).
    @Test func aFolderOfThousandsOfEntriesIsListedAndRemovedWhole() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let names = (0..<2_000).map { "f\($0)" }
        for name in names { try FileSystem.writeAtomically([], toPath: folder + "/" + name) }
        #expect(try FileSystem.contentsOfDirectory(atPath: folder).sorted() == names.sorted())
        try FileSystem.removeItem(atPath: folder)
        #expect(!FileSystem.fileExists(atPath: folder))
    }

    @Test func createDirectoriesThroughAFileFails() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        try FileSystem.writeAtomically([1], toPath: folder + "/file")
        let error = try #require(throws: SystemError.self) {
            try FileSystem.createDirectories(atPath: folder + "/file/sub")
        }
        #expect(error.errno == ENOTDIR)
        let atFile = try #require(throws: SystemError.self) {
            try FileSystem.createDirectories(atPath: folder + "/file")
        }
        #expect(atFile.errno == ENOTDIR)
    }

    @Test func fileExists() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        #expect(FileSystem.fileExists(atPath: folder))
        #expect(!FileSystem.fileExists(atPath: folder + "/nothing"))
        try FileSystem.writeAtomically([], toPath: folder + "/empty")
        #expect(FileSystem.fileExists(atPath: folder + "/empty"))
        #expect(!FileSystem.isDirectory(atPath: folder + "/empty"))
    }

    @Test func removeItemRemovesATree() throws {
        let folder = try makeFolder()
        try FileSystem.createDirectories(atPath: folder + "/x/y")
        try FileSystem.writeAtomically([1], toPath: folder + "/x/y/file")
        try FileSystem.removeItem(atPath: folder)
        #expect(!FileSystem.fileExists(atPath: folder))
        try FileSystem.removeItem(atPath: folder)  // already gone: fine
    }
}

// MARK: - Append-only files

@Suite struct AppendFileTests {
    @Test func appendsGrowTheFileAndTruncateCutsIt() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let file = try AppendFile(path: folder + "/journal")
        try file.append(Array("one\n".utf8))
        try file.append(Array("two\n".utf8))
        try file.sync()
        #expect(file.length == 8)
        try file.truncate(to: 4)
        #expect(file.length == 4)
        #expect(try FileSystem.readFile(atPath: folder + "/journal") == Array("one\n".utf8))
    }

    /// The journal writer reopens the path when a compaction's rename put a
    /// new file there; this is how it tells.
    @Test func knowsWhenThePathNamesAnotherFile() throws {
        let folder = try makeFolder()
        defer { try? FileSystem.removeItem(atPath: folder) }
        let path = folder + "/journal"
        let file = try AppendFile(path: path)
        try file.append([1])
        #expect(!file.isReplaced)
        try FileSystem.writeAtomically([2], toPath: path)
        #expect(file.isReplaced)
        let reopened = try AppendFile(path: path)
        #expect(!reopened.isReplaced && reopened.length == 1)
        try FileSystem.removeItem(atPath: path)
        #expect(reopened.isReplaced)
    }
}
