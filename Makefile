# chatd: build, run, test and install.
#
#   make run       install what is missing, build, run chatd in the foreground
#                  on port 7447 with its state in ./state
#   make test      build and run every test
#   make build     release binaries in .build/release
#   make man       manual pages and shell completions in .build/man
#   make install   PREFIX=/usr/local DESTDIR= UNITDIR=: binaries, systemd units,
#                  the static crash backtracer, docs, manual pages, shell
#                  completions, and /etc/chatd/chatd.toml if absent
#   make uninstall remove what install put in place (never the config or the state)
#   make deb       .build/deb/chatd_VERSION_ARCH.deb, checked by lintian (debian/)
#   make clean     remove build output and ./state
#   make system-test  (root) chatd under a real systemd in private namespaces
#   make flood-test   1,000,000 bad datagrams while a real client is timed
#   make chat-fault-test  the chat room's fault tests too heavy for `make test`
#   make fuzz      libFuzzer for FUZZ_SECONDS (60) (Fuzz/README.md)
#   make test-sanitize  the tests under AddressSanitizer, then ThreadSanitizer
#   make bench     the performance suite against ../shared/bench (docs/PERFORMANCE.md)

SWIFT     ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
PREFIX    ?= /usr/local
BINDIR    ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
LIBEXECDIR ?= $(PREFIX)/libexec
DOCDIR    ?= $(PREFIX)/share/doc/chatd
UNITDIR   ?= $(PREFIX)/lib/systemd/system
MANDIR    ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
# Swift's static crash backtracer, installed beside chatd so that the unit
# does not depend on the toolchain folder.
BACKTRACER ?= $(dir $(realpath $(SWIFT)))../libexec/swift/linux/swift-backtrace-static
DESTDIR   ?=
STATE     := $(CURDIR)/state
RELEASE   := $(CURDIR)/.build/release
SWIFTFLAGS_RELEASE := -c release --static-swift-stdlib

# The generated manual pages and completions (man/generate.sh), and their
# date: SOURCE_DATE_EPOCH's (dpkg-buildpackage sets it from debian/changelog),
# else the last commit's, so that the same source gives the same pages.
GENMAN    := $(CURDIR)/.build/man
MANDATE   ?= $(shell if [ -n "$$SOURCE_DATE_EPOCH" ]; then date -u -d "@$$SOURCE_DATE_EPOCH" +%F; \
	else git -C "$(CURDIR)" log -1 --format=%cs 2>/dev/null || echo 1970-01-01; fi)

.PHONY: all deps build run test install uninstall clean man

all: build

# libsystemd-dev: chatd links libsystemd for sd_notify and the journal.
# groff-base and mandoc: the manual pages' test renders them with both and
# fails on any warning; python3 writes the pages (man/manpages.py).
DEPS := libsystemd-dev groff-base mandoc python3
deps:
	@missing=$$(for p in $(DEPS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: deps
	$(SWIFT) build $(SWIFTFLAGS_RELEASE)

# A config like the shipped one, with the snapshot kept in ./state.
$(STATE)/chatd.toml: config/chatd.toml
	mkdir -p $(STATE)
	sed -e 's|^snapshot_path = .*|snapshot_path = "$(STATE)/registry.json"|' \
	    -e 's|^socket = .*|socket = "$(STATE)/control"|' config/chatd.toml > $@

run: build $(STATE)/chatd.toml
	exec $(RELEASE)/chatd --config $(STATE)/chatd.toml

# A test process that crashes prints the crashed thread's frames and
# nothing after them (no registers, no image list), so that they are what a
# log's tail, which is all CI keeps, shows.
TEST_ENV := SWIFT_BACKTRACE=enable=yes,interactive=no,color=no,threads=crashed,registers=none,images=none

test: deps
	$(SWIFT) build --build-tests
	$(TEST_ENV) $(SWIFT) test --skip-build

# Manual pages and completions, made from the release binaries' own parsers
# (man/manpages.py says how and why): nothing generated is committed.
man: build
	bash man/generate.sh $(RELEASE) $(GENMAN) $(MANDATE) $(DOCDIR)

install: build man
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBEXECDIR)/chatd $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 $(RELEASE)/chatd $(RELEASE)/chat $(RELEASE)/chatctl $(DESTDIR)$(BINDIR)/
	install -m 0755 $(BACKTRACER) $(DESTDIR)$(LIBEXECDIR)/chatd/swift-backtrace-static
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' -e 's|/usr/local/libexec/|$(LIBEXECDIR)/|g' \
	    -e 's|/etc/chatd/|$(SYSCONFDIR)/chatd/|g' -e 's|/usr/share/doc/chatd/|$(DOCDIR)/|g' \
	    systemd/chatd.service > $(DESTDIR)$(UNITDIR)/chatd.service
	sed -e 's|/usr/share/doc/chatd/|$(DOCDIR)/|g' systemd/chatd.socket > $(DESTDIR)$(UNITDIR)/chatd.socket
	sed -e 's|/usr/share/doc/chatd/|$(DOCDIR)/|g' systemd/chatd-control.socket > $(DESTDIR)$(UNITDIR)/chatd-control.socket
	chmod 0644 $(DESTDIR)$(UNITDIR)/chatd.service $(DESTDIR)$(UNITDIR)/chatd.socket $(DESTDIR)$(UNITDIR)/chatd-control.socket
	install -m 0644 README.md docs/PROTOCOL.md docs/CONTROL.md $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(MANDIR)/man8
	install -m 0644 $(GENMAN)/man1/chat.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 $(GENMAN)/man5/chatd.toml.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 $(GENMAN)/man8/chatd.8 $(GENMAN)/man8/chatctl.8 $(DESTDIR)$(MANDIR)/man8/
	install -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	install -m 0644 $(GENMAN)/completions/bash/chatd $(GENMAN)/completions/bash/chat \
	    $(GENMAN)/completions/bash/chatctl $(DESTDIR)$(BASHCOMPDIR)/
	install -m 0644 $(GENMAN)/completions/zsh/_chatd $(GENMAN)/completions/zsh/_chat \
	    $(GENMAN)/completions/zsh/_chatctl $(DESTDIR)$(ZSHCOMPDIR)/
	install -m 0644 $(GENMAN)/completions/fish/chatd.fish $(GENMAN)/completions/fish/chat.fish \
	    $(GENMAN)/completions/fish/chatctl.fish $(DESTDIR)$(FISHCOMPDIR)/
	install -d $(DESTDIR)$(SYSCONFDIR)/chatd
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/chatd/chatd.toml ]; then \
		echo "keeping existing $(DESTDIR)$(SYSCONFDIR)/chatd/chatd.toml"; \
	else \
		install -m 0644 config/chatd.toml $(DESTDIR)$(SYSCONFDIR)/chatd/chatd.toml; \
	fi
	@echo "installed; under systemd: systemctl daemon-reload && systemctl enable --now chatd.socket chatd-control.socket chatd"

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/chatd $(DESTDIR)$(BINDIR)/chat $(DESTDIR)$(BINDIR)/chatctl
	rm -f $(DESTDIR)$(UNITDIR)/chatd.service $(DESTDIR)$(UNITDIR)/chatd.socket $(DESTDIR)$(UNITDIR)/chatd-control.socket
	rm -rf $(DESTDIR)$(LIBEXECDIR)/chatd $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(MANDIR)/man1/chat.1 $(DESTDIR)$(MANDIR)/man5/chatd.toml.5 \
	    $(DESTDIR)$(MANDIR)/man8/chatd.8 $(DESTDIR)$(MANDIR)/man8/chatctl.8
	rm -f $(DESTDIR)$(BASHCOMPDIR)/chatd $(DESTDIR)$(BASHCOMPDIR)/chat $(DESTDIR)$(BASHCOMPDIR)/chatctl
	rm -f $(DESTDIR)$(ZSHCOMPDIR)/_chatd $(DESTDIR)$(ZSHCOMPDIR)/_chat $(DESTDIR)$(ZSHCOMPDIR)/_chatctl
	rm -f $(DESTDIR)$(FISHCOMPDIR)/chatd.fish $(DESTDIR)$(FISHCOMPDIR)/chat.fish $(DESTDIR)$(FISHCOMPDIR)/chatctl.fish
	@echo "kept $(DESTDIR)$(SYSCONFDIR)/chatd/chatd.toml and /var/lib/chatd; remove them by hand if wanted"

clean:
	rm -rf .build .build-fuzz .build-asan .build-tsan $(STATE)

# The Debian package (README: "Installing the Debian package"), with
# debhelper: dh_installsystemd writes the maintainer scripts that enable,
# start, restart and stop the units, dh_shlibdeps finds Depends, dh_installdeb
# makes /etc/chatd/chatd.toml a conffile. The version is the one of
# Sources/ChatCore/Version.swift, written into a generated debian/changelog,
# and checked against `--version` of the three binaries inside the .deb.
# dpkg-buildpackage writes its output into the parent of the folder it runs
# in, so it runs in a staging folder under .build/deb (a copy of debian/),
# and debian/rules builds and installs from this checkout (CHATD_SRC). Ends
# with lintian, which must report no error.
VERSION   := $(shell sed -n 's/^ *public static let string = "\([^"]*\)".*/\1/p' Sources/ChatCore/Version.swift)
DEB_ARCH  := $(shell dpkg --print-architecture 2>/dev/null)
DEB_DIR   := .build/deb
DEB_STAGE := $(DEB_DIR)/chatd-$(VERSION)
DEB       := $(DEB_DIR)/chatd_$(VERSION)_$(DEB_ARCH).deb
# The tools of `make deb`, and Build-Depends from debian/control that `make
# deps` does not install already.
DEB_TOOLS := debhelper dpkg-dev lintian pkgconf

.PHONY: deb deb-deps
deb-deps:
	@missing=; for p in $(DEB_TOOLS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

deb: build deb-deps
	@[ -n "$(VERSION)" ] || { echo "make deb: no version in Sources/ChatCore/Version.swift" >&2; exit 1; }
	rm -rf $(DEB_DIR)
	mkdir -p $(DEB_STAGE)
	cp -R debian $(DEB_STAGE)/debian
	@# debian/changelog: one entry, this version, dated by the commit (so the
	@# same commit gives the same package), signed by debian/control's Maintainer.
	@epoch=$$(git log -1 --format=%ct 2>/dev/null || date +%s); \
	commit=$$(git describe --always --dirty 2>/dev/null || echo unknown); \
	maintainer=$$(sed -n 's/^Maintainer: //p' debian/control); \
	{ printf 'chatd (%s) bookworm; urgency=medium\n\n' '$(VERSION)'; \
	  printf '  * chatd %s, packaged by `make deb` from commit %s.\n' '$(VERSION)' "$$commit"; \
	  printf '    The version comes from Sources/ChatCore/Version.swift.\n\n'; \
	  printf ' -- %s  %s\n' "$$maintainer" "$$(LC_ALL=C date -u -R -d @$$epoch)"; \
	} > $(DEB_STAGE)/debian/changelog
	cd $(DEB_STAGE) && CHATD_SRC=$(CURDIR) dpkg-buildpackage --build=binary --no-sign
	@# The package's version must be what the binaries inside it print.
	rm -rf $(DEB_DIR)/contents && dpkg-deb -x $(DEB) $(DEB_DIR)/contents
	@pkg=$$(dpkg-deb -f $(DEB) Version); \
	for bin in chatd chat chatctl; do \
		v=$$($(DEB_DIR)/contents/usr/bin/$$bin --version) || { echo "make deb: $$bin --version failed" >&2; exit 1; }; \
		if [ "$$v" != "$$pkg" ]; then echo "make deb: $$bin --version says $$v, the package $$pkg" >&2; exit 1; fi; \
	done; \
	echo "version check: package $$pkg = chatd, chat and chatctl --version"
	@# One call to a Foundation (not FoundationEssentials) overload links ICU's
	@# 34 MB of data into a binary, as String.contains(" ") once did in chat.
	@for bin in chatd chat chatctl; do \
		if nm $(RELEASE)/$$bin | grep -q 'icudt[0-9]*_dat'; then \
			echo "make deb: $$bin links ICU's data (FoundationInternationalization); nm -u its objects for 10Foundation" >&2; exit 1; \
		fi; \
	done
	rm -rf $(DEB_DIR)/contents
	lintian --fail-on error $(DEB)
	@echo "built $(DEB) ($$(du -h $(DEB) | cut -f1))"

# The system test (as root): boots systemd in private namespaces, installs
# chatd there with `make install PREFIX=/usr` and checks it as a service
# (socket activation, notify, reload, watchdog, restart, stop, hardening),
# then boots again and runs the Debian package's life cycle (install,
# registrations, upgrade, remove, purge), hence the package first.
# The machine is left unchanged. See Tests/system/run.sh.
.PHONY: system-test
system-test: deb
	bash Tests/system/run.sh

# The performance suite (docs/PERFORMANCE.md): a release build, then chatd
# against the C yardstick in ../shared/bench (one table), and the chat room
# against ngircd, InspIRCd and chatfloor (a second; it installs the two IRC
# servers with apt-get when missing). BENCH_SUITE=quick runs the first three
# rows only, BENCH_SUITE=scale the 1,000,000-user rows, BENCH_SUITE=chat the
# chat table.
BENCH_SUITE ?= all
.PHONY: bench
bench: build
	bash bench/run.sh $(BENCH_SUITE)

# Fuzzing (Fuzz/README.md): ChatFuzz, built with libFuzzer and AddressSanitizer
# into .build-fuzz, runs for FUZZ_SECONDS over a copy of Fuzz/corpus (and
# Fuzz/regressions) in .build/fuzz-corpus, which keeps what it finds between
# runs; crashing inputs go to .build/fuzz-artifacts/. Ends with the number of
# inputs executed and the size of the corpus; fails if the fuzzer found a crash.
FUZZ_SECONDS ?= 60
FUZZ_CORPUS := .build/fuzz-corpus
FUZZ_ARTIFACTS := .build/fuzz-artifacts
.PHONY: fuzz
fuzz:
	$(SWIFT) build -c release --product ChatFuzz --scratch-path .build-fuzz \
	    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DCHAT_LIBFUZZER
	mkdir -p $(FUZZ_CORPUS) $(FUZZ_ARTIFACTS)
	cp Fuzz/corpus/* $(FUZZ_CORPUS)/
	if [ -d Fuzz/regressions ]; then find Fuzz/regressions -type f ! -name '.*' -exec cp {} $(FUZZ_CORPUS)/ \; ; fi
	@echo "fuzzing for $(FUZZ_SECONDS) s (log: .build/fuzz.log)"
	@{ SWIFT_BACKTRACE=enable=no .build-fuzz/release/ChatFuzz $(FUZZ_CORPUS) \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=1024 -timeout=10 -dict=Fuzz/chat.dict \
	    -artifact_prefix=$(FUZZ_ARTIFACTS)/ -print_final_stats=1 2>&1; echo $$? > .build/fuzz.status; } \
	    | tee .build/fuzz.log | grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' || true
	@status=$$(cat .build/fuzz.status); \
	echo "executions: $$(sed -n 's/^stat::number_of_executed_units: *//p' .build/fuzz.log)"; \
	echo "corpus: $$(ls $(FUZZ_CORPUS) | wc -l) files, $$(du -sb $(FUZZ_CORPUS) | cut -f1) bytes in $(FUZZ_CORPUS)"; \
	if [ "$$status" != 0 ]; then echo "the fuzzer found a crash (exit $$status): see $(FUZZ_ARTIFACTS)/ and Fuzz/README.md"; fi; \
	exit $$status

# The unit and loopback tests under AddressSanitizer, then ThreadSanitizer,
# each in a build folder of its own (.build-asan, .build-tsan). Leaks are
# checked too, except those Tests/sanitizers/lsan-suppressions.txt names (in
# TOMLKit, XCTest and the test harness). The socket activation test is skipped
# under ASan: systemd-socket-activate starts chatd with a fresh environment,
# without LSAN_OPTIONS, so TOMLKit's leak would fail it; TSan runs it.
# CHATD_SANITIZER tells the loopback tests to load smaller registries.
LSAN_SUPPRESSIONS := $(CURDIR)/Tests/sanitizers/lsan-suppressions.txt
.PHONY: test-sanitize
test-sanitize: deps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	$(TEST_ENV) CHATD_SANITIZER=address LSAN_OPTIONS=suppressions=$(LSAN_SUPPRESSIONS):print_suppressions=0 \
	    $(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan \
	    --skip takesItsSocketFromSocketActivation
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	$(TEST_ENV) CHATD_SANITIZER=thread $(SWIFT) test --skip-build --sanitize=thread --scratch-path .build-tsan

# The flood test (bench/flood.sh): 1,000,000 bad datagrams from 5,000
# addresses against a release chatd with its default limits, while a real
# client is timed; fails unless its p99 stays under 50 ms with nothing lost,
# memory stays bounded and the log holds summaries only.
.PHONY: flood-test
flood-test: build
	bash bench/flood.sh

# The chat room's fault tests (docs/RELIABILITY.md) against the release
# binaries: the abuse test (5,000 flooding addresses while a member is timed)
# and a harsher lossy network, which CHATD_FAULT_TESTS enables, and again the
# fault tests `make test` runs against the debug build (kill -9, the lossy
# relay, the vanishing member), and the control socket's tests, the large
# listing at 1,000,000 users.
.PHONY: chat-fault-test
chat-fault-test: build
	$(SWIFT) build --build-tests
	$(TEST_ENV) CHATD_FAULT_TESTS=1 CHATD_BIN_DIR=$(RELEASE) $(SWIFT) test --skip-build \
	    --filter 'AbuseTests|LossyNetworkTests|ChatLoopbackTests|ChatTalkTests'
	@# After, not beside them: the million-user listing would starve the abuse test's generator.
	$(TEST_ENV) CHATD_FAULT_TESTS=1 CHATD_BIN_DIR=$(RELEASE) $(SWIFT) test --skip-build --filter ControlTests
