// swift-tools-version: 6.1
import PackageDescription

// Layers, each depending only on those above it:
//   ChatCore    pure protocol logic, no I/O: codec, usernames, registry, snapshot,
//               journal and history formats, the client's machines (the handshake,
//               TalkSession for `chat talk`), and ChatService, the server's one state
//               machine (every protocol and storage decision, the chat room's included)
//   ChatConfig  the TOML config file, parsed and checked (pure: text in, settings out)
//   ChatSystem  every syscall: sockets, epoll, signalfd, files, threads, systemd, logging
//   ChatServer  chatd's shell: one epoll loop moving datagrams, time and storage
//               outcomes between ChatSystem and ChatCore's ChatService
//   ChatClient  the client library: ChatCore's client machines driven by a UDP socket
//   chatd, chat, chatctl  thin executables: arguments, config, wiring
//   chatd-bench a load generator and benchmark driver (`make bench`)
//   ChatFuzz    the libFuzzer target over ChatCore (`make fuzz`); ChatFuzzHarness holds its checks
let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "chatd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "chatd", targets: ["chatd"]),
        .executable(name: "chat", targets: ["chat"]),
        .executable(name: "chatctl", targets: ["chatctl"]),
        .executable(name: "chatd-bench", targets: ["chatd-bench"]),
        .library(name: "ChatClient", targets: ["ChatClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        .target(name: "ChatCore", swiftSettings: strict),
        // A C target rather than a system library only so that layout_checks.c is compiled.
        .target(name: "CLinux"),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .target(
            name: "ChatConfig",
            dependencies: ["ChatCore", .product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: strict),
        .target(
            name: "ChatSystem",
            dependencies: ["ChatCore", "CLinux", "CSystemd", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict),
        .target(
            name: "ChatServer",
            dependencies: [
                "ChatCore", "ChatConfig", "ChatSystem",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(name: "ChatClient", dependencies: ["ChatCore", "ChatSystem"], swiftSettings: strict),
        .executableTarget(
            name: "chatd",
            dependencies: [
                "ChatCore", "ChatConfig", "ChatSystem", "ChatServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "chat",
            dependencies: [
                "ChatCore", "ChatConfig", "ChatSystem", "ChatClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "chatctl",
            dependencies: [
                "ChatCore", "ChatConfig", "ChatSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "chatd-bench",
            dependencies: [
                "ChatCore", "ChatSystem",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: strict),
        .target(name: "ChatFuzzHarness", dependencies: ["ChatCore"], swiftSettings: strict),
        // Built with -sanitize=fuzzer -DCHAT_LIBFUZZER by `make fuzz`; a plain build replays inputs.
        .executableTarget(name: "ChatFuzz", dependencies: ["ChatFuzzHarness", "ChatSystem"], swiftSettings: strict),
        .testTarget(name: "ChatCoreTests", dependencies: ["ChatCore"], swiftSettings: strict),
        .testTarget(name: "ChatConfigTests", dependencies: ["ChatConfig"], swiftSettings: strict),
        .testTarget(name: "ChatSystemTests", dependencies: ["ChatSystem", "ChatCore"], swiftSettings: strict),
        .testTarget(
            name: "ChatServerTests",
            dependencies: [
                "ChatServer", "ChatCore", "ChatConfig", "ChatSystem", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["ChatCore", "ChatSystem", "chatd", "chat", "chatctl"],
            swiftSettings: strict),
        .testTarget(
            name: "ChatPropertyTests",
            dependencies: ["ChatCore", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: strict),
        .testTarget(name: "ChatFuzzTests", dependencies: ["ChatFuzzHarness", "ChatCore"], swiftSettings: strict),
    ]
)
