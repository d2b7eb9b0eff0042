// The one error a config file can produce, shaped as a single line that an
// operator can act on without reading code.
//
// chatd prints it to stderr at startup, logs it on a failed SIGHUP reload,
// and `chatd --check-config` prints it, so it names the file, the line when
// it is known, the offending key as `section.key`, and what would have been
// accepted: `/etc/chatd/chatd.toml:12: registry.max_users: must be ...`.

/// Why a config file was rejected.
public struct ConfigError: Error, Equatable, CustomStringConvertible {
    /// The file as the caller named it.
    public let path: String
    /// 1-based; known only for TOML syntax errors, because TOMLKit keeps no
    /// source positions on parsed values.
    public let line: Int?
    /// `section.key`, or just `section`; nil for syntax errors.
    public let key: String?
    /// What is wrong and what is allowed.
    public let problem: String

    public init(path: String, line: Int?, key: String?, problem: String) {
        self.path = path
        self.line = line
        self.key = key
        self.problem = problem
    }

    public var description: String {
        var text = path
        if let line { text += ":\(line)" }
        text += ": "
        if let key { text += "\(key): " }
        return text + problem
    }
}
