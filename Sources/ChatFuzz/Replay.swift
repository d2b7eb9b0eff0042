// Reading fuzz inputs from files for ChatFuzz's replay mode (a build without
// libFuzzer): a file, or every file of a folder in name order, each run
// through one harness. Plain libc, so that the target needs nothing but
// ChatCore and the harness.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ChatFuzzHarness

struct Replay {
    private var harness = FuzzHarness()
    private(set) var count = 0

    /// What the inputs reached, in one line.
    var summary: String {
        let statistics = harness.statistics
        let events = statistics.events.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
        return "events: " + events.joined(separator: ", ")
            + "; snapshots loaded \(statistics.snapshotsLoaded), refused \(statistics.snapshotsRefused)"
            + "; journals replayed \(statistics.journalsReplayed), refused \(statistics.journalsRefused)"
            + "; scripts \(statistics.scripts), removals \(statistics.removals)"
    }

    /// Replays `path` (a file or a folder), exiting 1 at the first failure.
    mutating func run(_ path: String) {
        var info = stat()
        guard stat(path, &info) == 0 else { fatal("\(path): \(String(cString: strerror(errno)))") }
        if info.st_mode & S_IFMT == S_IFDIR {
            for name in Self.files(in: path) { run(path + "/" + name) }
            return
        }
        let bytes = Self.read(path)
        do {
            try harness.run(bytes)
            count += 1
        } catch {
            fatal("\(path): \(error)")
        }
    }

    private static func files(in folder: String) -> [String] {
        guard let directory = opendir(folder) else { fatal("\(folder): \(String(cString: strerror(errno)))") }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if !name.hasPrefix(".") { names.append(name) }
        }
        return names.sorted()
    }

    private static func read(_ path: String) -> [UInt8] {
        guard let file = fopen(path, "rb") else { fatal("\(path): \(String(cString: strerror(errno)))") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let got = fread(&buffer, 1, buffer.count, file)
            bytes += buffer[..<got]
            if got < buffer.count { break }
        }
        return bytes
    }
}

func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

func fatal(_ message: String) -> Never {
    printError("ChatFuzz: " + message)
    exit(1)
}
