// The one place chatd's version is written. `chatd --version`, `chat
// --version`, `chatctl --version`, chatctl's `status` and the Debian
// package (`make deb` reads it from this line) all report it.

public enum ChatdVersion {
    public static let string = "0.11.0"
}
