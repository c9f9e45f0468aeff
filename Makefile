# Everything a developer or CI runs. `make run` needs only Go and the PostgreSQL
# server binaries (initdb, pg_ctl); state lives under .data/.

GO    ?= go
BIN   := .data/bin
CMDS  := ./cmd/api ./cmd/notifier ./cmd/reaper ./cmd/devstack

.PHONY: build run test testdb-stop bench fuzz lint deploy-check

## build: compile api, notifier, reaper and devstack into .data/bin
build:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(CMDS)

## run: the whole stack (private Postgres and embedded NATS unless DATABASE_URL / NATS_URL are set)
# The built binary, not `go run`: Ctrl-C then ends make cleanly.
run: build
	$(BIN)/devstack

## test: all tests with the race detector, against TEST_DATABASE_URL, the local
## Postgres on 5432, or a private cluster in .data/testpg (started if needed)
test:
	@url="$$($(GO) run ./cmd/devstack testdb)" || exit 1; \
	echo "TEST_DATABASE_URL from devstack testdb; $(GO) test -race -count=1 ./..."; \
	TEST_DATABASE_URL="$$url" $(GO) test -race -count=1 ./...

## testdb-stop: stop the private test cluster started by `make test`
testdb-stop:
	$(GO) run ./cmd/devstack testdb-stop

## bench: load generator against a running stack
bench:
	$(GO) run ./cmd/loadgen $(BENCH_FLAGS)

## fuzz: fuzz every Fuzz target for FUZZTIME each (default 30s); `make test`
## runs only their seeds. Findings land in each package's testdata/fuzz.
FUZZTIME ?= 30s
fuzz:
	@for dir in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -h '^func Fuzz' $$dir/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "== $$dir $$f"; \
			$(GO) test $$dir -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) || exit 1; \
		done; \
	done

## deploy-check: promtool (go.mod's version, built on first use) checks deploy/prometheus:
## the config with its rule file, and the alert rules' unit tests
# The module cache is asked first, so a built promtool needs no network.
deploy-check:
	@v="$$($(GO) list -m -f '{{.Version}}' github.com/prometheus/prometheus)" || exit 1; \
	export GOPROXY="file://$$($(GO) env GOMODCACHE)/cache/download,$$($(GO) env GOPROXY)"; \
	$(GO) run github.com/prometheus/prometheus/cmd/promtool@$$v check config deploy/prometheus/prometheus.yml && \
	$(GO) run github.com/prometheus/prometheus/cmd/promtool@$$v test rules deploy/prometheus/alerts_test.yml

## lint: go vet and a gofmt check
lint:
	$(GO) vet ./...
	@out="$$(find . -path ./.data -prune -o -name '*.go' -print | xargs gofmt -l)"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
