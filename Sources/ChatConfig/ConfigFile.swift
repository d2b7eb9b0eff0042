// Finding and reading the config file, shared by chatd, chat and chatctl.
//
// A path the user named must exist; the default path may be absent, which
// means built-in defaults, so a fresh install runs without any file.
//
// The caller passes the function that reads the file (ChatSystem's
// `FileSystem.readFile(atPath:)` in the executables), so that ChatConfig
// stays text in, settings out and never makes a system call itself.

extension Config {
    public static let defaultPath = "/etc/chatd/chatd.toml"

    /// Reads and checks the config at `path`, or at the default path when nil.
    /// `read` returns a file's bytes, or nil when it does not exist.
    public static func load(path: String?, read: (String) throws -> [UInt8]?) throws(ConfigError) -> Config {
        let file = path ?? defaultPath
        let bytes: [UInt8]?
        do {
            bytes = try read(file)
        } catch {
            throw ConfigError(path: file, line: nil, key: nil, problem: "cannot read: \(error)")
        }
        guard let bytes else {
            if path == nil { return .defaults }
            throw ConfigError(path: file, line: nil, key: nil, problem: "no such file")
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ConfigError(path: file, line: nil, key: nil, problem: "not UTF-8 text")
        }
        return try parse(text, path: file)
    }
}
