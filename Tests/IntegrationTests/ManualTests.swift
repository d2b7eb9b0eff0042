// The manual pages and shell completions, generated from the built binaries
// by man/generate.sh as `make man` does: each page renders without a single
// warning under groff (`man` itself) and `mandoc -Tlint`, has the sections a
// Debian administrator looks for, and each completion script parses.
// `make deps` (which `make test` runs) installs groff-base and mandoc.

import Foundation
import Testing

private let repository = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A program on PATH, or nil.
private func onPath(_ name: String) -> URL? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    return path.split(separator: ":")
        .map { URL(fileURLWithPath: String($0)).appendingPathComponent(name) }
        .first { FileManager.default.isExecutableFile(atPath: $0.path) }
}

private func required(_ name: String) throws -> URL {
    try #require(onPath(name), "\(name) is not installed: run `make deps`")
}

/// The pages and completions, generated once per run into a folder beside
/// this test executable, in the build folder: a temporary folder would be
/// left behind, since no test owns it to remove it.
private let generated: Result<URL, any Error> = Result {
    let folder = testExecutableFolder.appendingPathComponent("manual-tests")
    try? FileManager.default.removeItem(at: folder)
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let result = try runProgram(
        try required("bash"),
        [repository.appendingPathComponent("man/generate.sh").path, Binaries.directory.path, folder.path, "2026-01-01"],
        timeout: .seconds(60))
    guard result.status == 0 else {
        throw TestFailure(description: "man/generate.sh exited \(result.status): \(result.stderr)")
    }
    return folder
}

private let pages = ["man8/chatd.8", "man1/chat.1", "man8/chatctl.8", "man5/chatd.toml.5"]

@Suite(.timeLimit(.minutes(2)))
struct ManualTests {
    @Test(arguments: pages)
    func rendersWithoutWarnings(page: String) throws {
        let file = try generated.get().appendingPathComponent(page).path
        let groff = try runProgram(try required("groff"), ["-man", "-ww", "-z", file])
        #expect(groff.status == 0 && groff.stderr.isEmpty, "groff -man -ww -z \(page): \(groff.stderr)")
        let mandoc = try runProgram(try required("mandoc"), ["-Tlint", "-W", "all", file])
        #expect(
            mandoc.status == 0 && mandoc.stdout.isEmpty && mandoc.stderr.isEmpty,
            "mandoc -Tlint \(page) (exit \(mandoc.status)): \(mandoc.stdout)\(mandoc.stderr)")
    }

    @Test(arguments: pages)
    func hasTheSectionsAnAdministratorLooksFor(page: String) throws {
        let text = try String(contentsOf: try generated.get().appendingPathComponent(page), encoding: .utf8)
        let sections = text.split(separator: "\n").filter { $0.hasPrefix(".SH ") }.map { $0.dropFirst(4) }
        var expected = ["NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "SEE ALSO"]
        if page != "man5/chatd.toml.5" { expected += ["OPTIONS", "EXIT STATUS", "EXAMPLES"] }
        for section in expected {
            #expect(sections.contains(Substring(section)), "\(page) has no \(section): \(sections)")
        }
        let name = URL(fileURLWithPath: page).deletingPathExtension().lastPathComponent
        let section = URL(fileURLWithPath: page).pathExtension
        #expect(text.contains(".TH \(name.uppercased()) \(section) 2026-01-01 "))
        for other in ["chatd (8)", "chat (1)", "chatctl (8)", "chatd.toml (5)"] where !other.hasPrefix(name + " ") {
            #expect(text.contains(".BR " + other.replacingOccurrences(of: "-", with: "\\-")), "\(page) does not refer to \(other)")
        }
        #expect(text.contains("/etc/chatd/chatd.toml"))
        if name != "chat" { #expect(text.contains("/run/chatd/control")) }
    }

    @Test func commandPagesDescribeEverySubcommandAndOption() throws {
        let folder = try generated.get()
        let chat = try String(contentsOf: folder.appendingPathComponent("man1/chat.1"), encoding: .utf8)
        for command in ["join", "connect", "introduce", "talk", "say", "who"] {
            #expect(chat.contains(".SS \"chat \(command)\""), "chat.1 lacks chat \(command)")
        }
        for option in ["\\-\\-bind", "\\-\\-timeout\\-ms", "\\-\\-listen", "\\-\\-no\\-batch"] {
            #expect(chat.contains(option), "chat.1 lacks \(option)")
        }
        let chatctl = try String(contentsOf: folder.appendingPathComponent("man8/chatctl.8"), encoding: .utf8)
        for command in ["status", "users", "lookup", "remove", "snapshot", "reload", "metrics"] {
            #expect(chatctl.contains(".SS \"chatctl \(command)\""), "chatctl.8 lacks chatctl \(command)")
        }
        let chatd = try String(contentsOf: folder.appendingPathComponent("man8/chatd.8"), encoding: .utf8)
        for option in ["\\-\\-config", "\\-\\-check\\-config", "\\-\\-reload"] {
            #expect(chatd.contains(option), "chatd.8 lacks \(option)")
        }
        #expect(chatd.contains(".SH SIGNALS"))
    }

    @Test func configPageDescribesEveryKey() throws {
        let page = try String(
            contentsOf: try generated.get().appendingPathComponent("man5/chatd.toml.5"), encoding: .utf8)
        let shipped = try String(contentsOf: repository.appendingPathComponent("config/chatd.toml"), encoding: .utf8)
        var section = ""
        for line in shipped.split(separator: "\n") {
            if line.hasPrefix("[") {
                section = String(line)
                #expect(page.contains(".SS \(section)"), "chatd.toml.5 lacks \(section)")
            } else if !line.hasPrefix("#"), let equals = line.range(of: " = ") {
                let key = line[..<equals.lowerBound]
                #expect(page.contains("\\fB\(key)\\fR = "), "chatd.toml.5 lacks \(section) \(key)")
            }
        }
    }

    @Test(arguments: ["chatd", "chat", "chatctl"])
    func completionScriptsParse(command: String) throws {
        let folder = try generated.get().appendingPathComponent("completions")
        let scripts = [("bash", command), ("zsh", "_\(command)"), ("fish", "\(command).fish")]
        for (shell, name) in scripts {
            let file = folder.appendingPathComponent(shell).appendingPathComponent(name)
            let text = try String(contentsOf: file, encoding: .utf8)
            #expect(text.contains(command) && text.count > 200, "\(shell)/\(name) is empty or not \(command)'s")
            // bash is always here; zsh and fish only where installed.
            guard let program = shell == "bash" ? try required("bash") : onPath(shell) else { continue }
            let check = try runProgram(program, ["-n", file.path])
            #expect(check.status == 0 && check.stderr.isEmpty, "\(shell) -n \(name): \(check.stderr)")
        }
    }
}
