# chatd: build, run, test and install.
#
#   make run       install what is missing, build, run chatd in the foreground
#                  on port 7447 with its state in ./state
#   make test      build and run every test
#   make build     release binaries in .build/release
#   make install   PREFIX=/usr/local DESTDIR= UNITDIR=: binaries, systemd units,
#                  the static crash backtracer, docs, and /etc/chatd/chatd.toml
#                  if absent
#   make uninstall remove what install put in place (never the config or the state)
#   make clean     remove build output and ./state
#   make system-test  (root) chatd under a real systemd in private namespaces
#   make bench     the performance suite against ../shared/bench (docs/PERFORMANCE.md)

SWIFT     ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
LIBEXECDIR ?= $(PREFIX)/libexec
DOCDIR    ?= $(PREFIX)/share/doc/chatd
UNITDIR   ?= $(PREFIX)/lib/systemd/system
# Swift's static crash backtracer, installed beside chatd so that the unit
# does not depend on the toolchain folder.
BACKTRACER ?= $(dir $(realpath $(SWIFT)))../libexec/swift/linux/swift-backtrace-static
DESTDIR   ?=
STATE     := $(CURDIR)/state
RELEASE   := $(CURDIR)/.build/release
SWIFTFLAGS_RELEASE := -c release --static-swift-stdlib

.PHONY: all deps build run test install uninstall clean

all: build

# libsystemd-dev: chatd links libsystemd for sd_notify and the journal.
deps:
	@if ! dpkg-query -W -f='$${Status}' libsystemd-dev 2>/dev/null | grep -q 'install ok installed'; then \
		echo "installing libsystemd-dev"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsystemd-dev; \
	fi

build: deps
	$(SWIFT) build $(SWIFTFLAGS_RELEASE)

# A config like the shipped one, with the snapshot kept in ./state.
$(STATE)/chatd.toml: config/chatd.toml
	mkdir -p $(STATE)
	sed 's|^snapshot_path = .*|snapshot_path = "$(STATE)/registry.json"|' config/chatd.toml > $@

run: build $(STATE)/chatd.toml
	exec $(RELEASE)/chatd --config $(STATE)/chatd.toml

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR)/chatd $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 $(RELEASE)/chatd $(RELEASE)/chat $(DESTDIR)$(BINDIR)/
	install -m 0755 $(BACKTRACER) $(DESTDIR)$(LIBEXECDIR)/chatd/swift-backtrace-static
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/libexec/|$(LIBEXECDIR)/|g' \
	    -e 's|/etc/chatd/|$(SYSCONFDIR)/chatd/|g' -e 's|/usr/share/doc/chatd/|$(DOCDIR)/|g' \
	    systemd/chatd.service > $(DESTDIR)$(UNITDIR)/chatd.service
	sed -e 's|/usr/share/doc/chatd/|$(DOCDIR)/|g' systemd/chatd.socket > $(DESTDIR)$(UNITDIR)/chatd.socket
	chmod 0644 $(DESTDIR)$(UNITDIR)/chatd.service $(DESTDIR)$(UNITDIR)/chatd.socket
	install -m 0644 README.md docs/PROTOCOL.md $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(SYSCONFDIR)/chatd
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/chatd/chatd.toml ]; then \
		echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/chatd/chatd.toml"; \
	else \
		install -m 0644 config/chatd.toml $(DESTDIR)$(SYSCONFDIR)/chatd/chatd.toml; \
	fi
	@echo "installed; under systemd: systemctl daemon-reload && systemctl enable --now chatd.socket chatd"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/chatd $(DESTDIR)$(BINDIR)/chat
	rm -f $(DESTDIR)$(UNITDIR)/chatd.service $(DESTDIR)$(UNITDIR)/chatd.socket
	rm -rf $(DESTDIR)$(LIBEXECDIR)/chatd $(DESTDIR)$(DOCDIR)
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/chatd/chatd.toml and /var/lib/chatd; remove them by hand if wanted"

clean:
	rm -rf .build $(STATE)

# The system test (as root): boots systemd in private namespaces, installs
# chatd there with `make install PREFIX=/usr` and checks it as a service
# (socket activation, notify, reload, watchdog, restart, stop, hardening).
# The machine is left unchanged. See Tests/system/run.sh.
.PHONY: system-test
system-test: build
	bash Tests/system/run.sh

# The performance suite (docs/PERFORMANCE.md): a release build, then chatd
# against the C yardstick in ../shared/bench, as one table. BENCH_SUITE=quick
# runs the first three rows only, BENCH_SUITE=scale the 1,000,000-user rows.
BENCH_SUITE ?= all
.PHONY: bench
bench: build
	bash bench/run.sh $(BENCH_SUITE)
