// chat's chat-room subcommands: talk, say, who.
//
// The client library runs the machines; this file turns their outputs into
// text. Stdout carries messages only (one per line, so that `--json` output
// is a stream a program can read), and every notice goes to stderr.

import ArgumentParser
import ChatClient
import ChatConfig
import ChatCore
import ChatSystem

extension Chat {
    struct Talk: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Join as NAME (registering it if needed) and talk in the chat room.",
            discussion: """
                Each line from stdin is posted; incoming messages go to stdout in order, each once, \
                as `HH:MM:SS <name> text` in local time (or JSON with --json). Notices (joined, \
                /who, server lost and back, missed messages) go to stderr. Lines over \(maxTextBytes) \
                bytes are refused here.

                Commands on a line of their own: /who lists the members, /quit leaves, /help lists \
                these; //text posts "/text".

                At the end of stdin (or /quit) chat waits until every line is acknowledged, leaves \
                and exits 0, or 69 if lines could not be delivered. SIGINT and SIGTERM leave at once \
                and exit 0 (a second one exits without waiting for the server); so does stdout \
                closing (`chat talk NAME --listen | head` once head has its lines).
                """)

        @Argument(help: ArgumentHelp("The username to join as, registered if needed. \(Username.rule).", valueName: "name"))
        var name: String

        @Flag(help: "Print each message as one JSON object per line: seq, time (RFC 3339, UTC), from, text.")
        var json = false

        @Flag(help: "Do not read stdin; listen until SIGINT or SIGTERM (for bots and logs).")
        var listen = false

        @Option(help: ArgumentHelp("Seconds between keepalive JOINs, which keep membership and NAT mappings alive. Default: client.keepalive_s (\(Config.defaults.client.keepaliveSeconds)).", valueName: "s"))
        var keepalive: Int?

        @Flag(help: "Speak the basic format: one message per push and one ACK per push. By default JOIN asks for BATCH (several messages per push, one ACK for several pushes: fewer datagrams for the server), and a server without it is spoken to in the basic format anyway; this is for comparing the two.")
        var noBatch = false

        @OptionGroup var options: ClientOptions

        func validate() throws {
            if let keepalive, !Config.keepaliveSecondsRange.contains(keepalive) {
                let range = Config.keepaliveSecondsRange
                throw ValidationError("--keepalive must be from \(range.lowerBound) to \(range.upperBound)")
            }
        }

        func run() throws {
            let username = checkedUsername(name)
            let resolved = options.resolve()
            let settings = TalkSettings(
                requests: resolved.settings,
                keepalive: .seconds(keepalive ?? resolved.file.client.keepaliveSeconds), batch: !noBatch)
            let server = resolved.server
            let json = json
            let outcome: Client.TalkOutcome
            do {
                // SIGPIPE would end chat at the first message after stdout's
                // reader went, before it could LEAVE; ignored, that write
                // fails with EPIPE and the session leaves (see below).
                try Signal.ignore(Signal.brokenPipe)
                outcome = try Client.talk(
                    username, server: server, source: resolved.source, settings: settings, readsInput: !listen
                ) { output in
                    switch output {
                    case .message(let message):
                        let line = json ? jsonLine(message) : textLine(message)
                        do {
                            try Posix.writeAll(fd: 1, bytes: Array(line.utf8))
                        } catch let error as SystemError where error.isBrokenPipe {
                            return false  // nobody reads stdout any more: leave
                        } catch {
                            // Another failure (a full disk under `>> room.log`) loses
                            // this line only; the session goes on, as before.
                        }
                    case .notice(let notice):
                        FileSystem.writeStandardError("chat: \(describe(notice, server: server))\n")
                    }
                    return true
                }
            } catch {
                finish(.systemError, "\(error)")
            }
            switch outcome {
            case .handshake(let result):
                finish(result, resolved)
            case .finished(.left(let undelivered)):
                if undelivered == 0 { finish(.success) }
                let lines = undelivered == 1 ? "1 line was" : "\(undelivered) lines were"
                finish(.unreachable, "\(lines) not delivered to the server at \(server)")
            case .finished(.interrupted):
                finish(.success)
            case .finished(.unreachable(let attempts)):
                finish(.unreachable, unreachableMessage(server, attempts: attempts))
            case .finished(.notRegistered):
                finish(.notRegistered, notRegisteredMessage(server))
            case .finished(.rejected(let reason, let detail)):
                finish(.protocolError, "the server at \(server) refused JOIN: \(reason)\(detail.map { " \($0)" } ?? "")")
            }
        }
    }

    struct Say: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Post one message to the chat room and print its seq.",
            discussion: """
                The words are joined with single spaces. The address must hold a username (exit 3 \
                otherwise, as for `chat connect`); it need not be a member of the room. The message \
                is retried under the [client] rules with one token, so the server posts it once.
                """)

        @Argument(help: ArgumentHelp("The message: UTF-8, at most \(maxTextBytes) bytes, no control characters.", valueName: "text"))
        var words: [String]

        @OptionGroup var options: ClientOptions

        var text: [UInt8] { Array(words.joined(separator: " ").utf8) }

        func validate() throws {
            switch ChatText.check(text) {
            case nil: break
            case ChatText.empty?: throw ValidationError("give the message to post")
            case ChatText.tooLong?: throw ValidationError("the message is \(text.count) bytes; at most \(maxTextBytes) are allowed")
            default: throw ValidationError("the message must not hold control characters (tabs, newlines)")
            }
        }

        func run() throws {
            let resolved = options.resolve()
            switch call(.say(text), resolved) {
            case .said(let seq):
                print(seq)
                finish(.success)
            case let other:
                finish(other, resolved)
            }
        }
    }

    struct Who: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the chat room's members, one name per line.",
            discussion: "The address must hold a username (exit 3 otherwise, as for `chat connect`).")

        @OptionGroup var options: ClientOptions

        func run() throws {
            let resolved = options.resolve()
            switch call(.who, resolved) {
            case .members(_, let names):
                for name in names { print(name) }
                finish(.success)
            case let other:
                finish(other, resolved)
            }
        }
    }
}

/// Runs a one-shot request; a failed CONNECT before it ends the program.
private func call(_ goal: ChatCallGoal, _ resolved: ClientOptions.Resolved) -> ChatCallResult {
    let outcome: Client.CallOutcome
    do {
        outcome = try Client.call(goal, server: resolved.server, source: resolved.source, settings: resolved.settings)
    } catch {
        finish(.systemError, "\(error)")
    }
    switch outcome {
    case .handshake(let result): finish(result, resolved)
    case .call(let result): return result
    }
}

/// Ends the program for a one-shot request that did not succeed.
private func finish(_ result: ChatCallResult, _ resolved: ClientOptions.Resolved) -> Never {
    let server = resolved.server
    switch result {
    case .said, .members:
        finish(.success)
    case .notRegistered:
        finish(.notRegistered, notRegisteredMessage(server))
    case .unreachable(let attempts):
        finish(.unreachable, unreachableMessage(server, attempts: attempts))
    case .rejected(.rateLimited, _):
        finish(.tryLater, "the server at \(server) refuses more messages from this address for now (RATE_LIMITED); try later")
    case .rejected(.unavailable, _):
        finish(.tryLater, "the server at \(server) cannot store messages right now (UNAVAILABLE); try later")
    case .rejected(let reason, let detail):
        finish(.protocolError, "the server at \(server) refused the request: \(reason)\(detail.map { " \($0)" } ?? "")")
    }
}

// MARK: - Formatting

/// `10:42:01 <alice> hello`, in local time.
func textLine(_ message: ChatMessage) -> String {
    let (hour, minute, second) = SystemClock.localTimeOfDay(millisecondsSince1970: message.timeMilliseconds)
    func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
    return "\(two(hour)):\(two(minute)):\(two(second)) <\(message.from)> \(message.textString)\n"
}

/// `{"seq":12,"time":"2026-11-27T10:42:01.512Z","from":"alice","text":"hello"}`.
func jsonLine(_ message: ChatMessage) -> String {
    let milliseconds = message.timeMilliseconds
    let seconds = milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000
    let time = rfc3339(seconds, milliseconds: Int(milliseconds - seconds * 1000))
    return "{\"seq\":\(message.seq),\"time\":\"\(time)\",\"from\":\(jsonString(message.from.text)),"
        + "\"text\":\(jsonString(message.textString))}\n"
}

func describe(_ notice: TalkNotice, server: Endpoint) -> String {
    switch notice {
    case .joined(let name, let online?):
        return "joined as \(name); \(online) online"
    case .joined(let name, nil):
        return "joined as \(name)"
    case .members(let count, let names):
        let list = names.map(\.text).joined(separator: ", ")
        return names.count == count ? "\(count) online: \(list)" : "\(count) online; received: \(list)"
    case .serverLost:
        return "no answer from the server at \(server); still trying"
    case .serverBack:
        return "the server at \(server) answers again"
    case .missed(let first, let last):
        // Not "no longer": after a crash without a journal, seqs the server
        // claimed but never gave look the same as evicted ones.
        let what = first == last ? "message #\(first)" : "messages #\(first) to #\(last)"
        return "missed: the server's history does not hold \(what)"
    case .lineTooLong(let bytes):
        return "not sent: the line is \(bytes) bytes; a message holds at most \(maxTextBytes)"
    case .lineNotText:
        return "not sent: a message must be UTF-8 text without control characters (such as tabs)"
    case .notDelivered(let text, .noAnswer):
        return "not delivered (no answer from the server): \(text)"
    case .notDelivered(let text, .refused(let reason, let detail)):
        return "not delivered (refused: \(reason)\(detail.map { " \($0)" } ?? "")): \(text)"
    case .rateLimited:
        return "the server limits how fast this address may post; lines wait their turn"
    case .help:
        return """
            lines are posted to the room. Commands:
              /who    list the members
              /quit   leave and exit once every line is delivered
              /help   this text
              //text  post "/text"
            """
    case .unknownCommand(let name):
        return "unknown command /\(name); /help lists the commands"
    case .refused(let verb, let reason, let detail):
        return "the server refused \(verb): \(reason)\(detail.map { " \($0)" } ?? "")"
    }
}
