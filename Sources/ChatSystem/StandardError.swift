// Plain messages to stderr for the executables' one-line errors, written
// with a single write(2) so lines from concurrent writers never interleave.

extension FileSystem {
    public static func writeStandardError(_ text: String) {
        try? Posix.writeAll(fd: 2, bytes: Array(text.utf8))
    }
}
