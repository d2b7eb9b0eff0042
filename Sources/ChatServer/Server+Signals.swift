// chatd's signals: SIGTERM and SIGINT stop the loop; SIGHUP (and chatctl
// reload) reloads the config, telling systemd (RELOADING=1, READY=1) and
// `chatd --reload`.

import ChatConfig
import ChatCore
import ChatSystem
import Logging

extension Server {
    func handleSignals() throws {
        while let signal = try signals.next() {
            switch signal {
            case Signal.hangup:
                reloadAndReport()
            default:
                logger.info("signal received", metadata: ["signal": "\(Signal.name(signal))"])
                running = false
            }
        }
    }

    /// A reload as systemd and `chatd --reload` see it, for SIGHUP and
    /// `chatctl reload` alike.
    @discardableResult
    func reloadAndReport() -> (applied: Bool, reason: String?) {
        Systemd.notify("RELOADING=1\nMONOTONIC_USEC=\(Systemd.monotonicMicroseconds())")
        let outcome = reload()
        sentStatus = status()
        Systemd.notify("READY=1\nSTATUS=\(sentStatus)")
        reportReload(outcome)
        return outcome
    }

    /// Tells a waiting `chatd --reload` how the reload ended.
    func reportReload(_ outcome: (applied: Bool, reason: String?)) {
        reloads += 1
        guard let path = ReloadStatus.path else { return }
        do {
            try ReloadStatus(count: reloads, applied: outcome.applied, reason: outcome.reason).write(to: path)
        } catch {
            logger.error("cannot write the reload status; systemctl reload will time out", metadata: [
                "path": "\(path)", "error": "\(error)",
            ])
        }
    }

    /// Applies what can change while running; refuses the whole new config
    /// if it is invalid or changes what needs a restart, so a half-applied
    /// config never runs.
    func reload() -> (applied: Bool, reason: String?) {
        let config: Config
        do {
            config = try reloadConfig()
        } catch {
            return refuseReload("invalid config: \(error)", ["error": "\(error)"], level: .error)
        }
        let new = Settings(config)
        // Under socket activation the socket unit decides where chatd listens.
        // journalPath and historyPath follow snapshotPath: no check of their own.
        let listenChanged = origin == .config && new.listen != settings.listen
        guard !listenChanged, new.snapshotPath == settings.snapshotPath, new.logTarget == settings.logTarget,
            new.durability == settings.durability
        else {
            return refuseReload(
                "changing bind, port, snapshot_path, durability or log target needs a restart",
                [
                    "listen": "\(settings.listen)", "listen.new": "\(new.listen)",
                    "snapshot.path": "\(settings.snapshotPath)", "snapshot.path.new": "\(new.snapshotPath)",
                    "log.target": "\(settings.logTarget)", "log.target.new": "\(new.logTarget)",
                ], level: .warning)
        }
        // The rest, [limits], [chat] and [delivery] included, applies at once.
        service.reconfigure(new.service, now: clock())
        logger.logLevel = new.logLevel
        settings = new
        reloadNote = "config reloaded"
        logger.info("config reloaded", metadata: [
            "message.id": MessageID.reloaded, "log.level": "\(new.logLevel)",
            "registry.max_users": "\(new.maxUsers)",
            "registry.snapshot_interval_s": "\(new.snapshotInterval.components.seconds)",
        ])
        return (true, nil)
    }

    func refuseReload(
        _ reason: String, _ metadata: Logger.Metadata, level: Logger.Level
    ) -> (applied: Bool, reason: String?) {
        reloadNote = "reload refused: \(reason); running config kept"
        var metadata = metadata
        metadata["message.id"] = MessageID.reloadRefused
        metadata["reason"] = "\(reason)"
        logger.log(level: level, "reload refused, keeping the running config", metadata: metadata)
        return (false, reason)
    }
}
