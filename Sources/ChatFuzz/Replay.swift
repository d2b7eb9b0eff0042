// Reading fuzz inputs from files for ChatFuzz's replay mode (a build without
// libFuzzer): a file, or every file of a folder in name order, each run
// through one harness. Files are read through ChatSystem, like every other
// piece of I/O in the package.

import ChatFuzzHarness
import ChatSystem

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
        if FileSystem.isDirectory(atPath: path) {
            let names: [String]
            do {
                names = try FileSystem.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }.sorted()
            } catch {
                fatal("\(path): \(error)")
            }
            for name in names { run(path + "/" + name) }
            return
        }
        let bytes: [UInt8]
        do {
            guard let read = try FileSystem.readFile(atPath: path) else { fatal("\(path): no such file") }
            bytes = read
        } catch {
            fatal("\(path): \(error)")
        }
        do {
            try harness.run(bytes)
            count += 1
        } catch {
            fatal("\(path): \(error)")
        }
    }
}

func printError(_ message: String) {
    FileSystem.writeStandardError(message + "\n")
}

func fatal(_ message: String) -> Never {
    printError("ChatFuzz: " + message)
    Posix.exit(1)
}
