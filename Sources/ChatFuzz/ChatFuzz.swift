// ChatFuzz: the libFuzzer target over ChatCore's codec, request handler,
// registry, snapshot reader and journal replay (the checks are in ChatFuzzHarness).
//
// `make fuzz` builds it with libFuzzer and AddressSanitizer:
//
//     swift build -c release --product ChatFuzz --scratch-path .build-fuzz \
//         -Xswiftc -sanitize=fuzzer,address -Xswiftc -DCHAT_LIBFUZZER
//
// and then `ChatFuzz` takes libFuzzer's options (a corpus folder,
// -max_total_time=60, ...). libFuzzer brings its own `main`, but SwiftPM
// links every Swift executable with `main` pointing at the module's entry
// point, so the entry point below hands over to libFuzzer's driver instead.
//
// A plain `swift build` (no CHAT_LIBFUZZER) makes a replayer with the same
// checks: `ChatFuzz FILE|FOLDER...` runs every file, in order, through one
// harness and exits 1 at the first broken rule, which is how a crash file
// from libFuzzer is examined without the sanitizers.

import ChatFuzzHarness
import ChatSystem

/// The registry persists across inputs, as in chatd; libFuzzer calls from one thread.
nonisolated(unsafe) private var harness = FuzzHarness()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    do {
        try harness.run(UnsafeRawBufferPointer(start: data, count: size))
    } catch {
        fatalError(error.description)
    }
    return 0
}

#if CHAT_LIBFUZZER
/// libFuzzer's driver (FuzzerDriver.cpp), linked in by -sanitize=fuzzer.
@_silgen_name("LLVMFuzzerRunDriver")
private func runDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@main
enum ChatFuzz {
    static func main() {
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        Posix.exit(runDriver(&argc, &argv, fuzz))
    }
}
#else
@main
enum ChatFuzz {
    static func main() {
        var replay = Replay()
        let paths = CommandLine.arguments.dropFirst()
        guard !paths.isEmpty else {
            printError("usage: ChatFuzz FILE|FOLDER... (built without libFuzzer: replays inputs through the checks)")
            Posix.exit(64)
        }
        for path in paths {
            replay.run(path)
        }
        print("ChatFuzz: \(replay.count) inputs passed every check")
        print(replay.summary)
    }
}
#endif
