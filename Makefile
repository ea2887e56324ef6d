# aliexpress: `make help` lists the targets.
# Where no Docker engine answers, the native stack (deploy/local/stack) is used.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/aliexpress/target
BIN := $(CARGO_TARGET_DIR)/release/aliexpress
DEBUG_BIN := $(CARGO_TARGET_DIR)/debug/aliexpress
STACK := deploy/local/stack
ROLES := deploy/local/roles
DOCKER := $(shell docker info >/dev/null 2>&1 && echo yes)

.DEFAULT_GOAL := help
.PHONY: help up smoke down restart observe-up-build stack-up stack-up-secure stack-down status build release test unit integration schemas contract contract-long fuzz bench bench-peer \
        migrate serve process-outbox process-outbox-follow run-product-consumer run-product-event-consumer \
        fmt lint compose-config rules-check ensure-rust chaos chaos-stack-up chaos-stack-down helm-check \
        cluster-up cluster-down test-cluster backup restore

help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-28s %s\n", $$1, $$2}'

ensure-rust:
	@command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

up: ## bring the platform up and run it (docker compose, or the native stack + roles)
ifeq ($(DOCKER),yes)
	docker compose up -d --build
else
	$(STACK) up
	$(MAKE) release
	$(BIN) migrate
	$(ROLES) up $(BIN)
	@echo "API: http://127.0.0.1:8000  (health: /health/, OpenAPI: /openapi.json, Swagger UI: /docs/, console: /console/)"
	@echo "Development token (catalog-admin, operator): \$$API_TOKENS, else TOKEN=\$$(cat $${ALIEXPRESS_STATE_DIR:-/var/tmp/aliexpress-stack}/roles/api-token)"
	@echo "A seller's token:     curl -s 127.0.0.1:9400/token -H 'content-type: application/json' -d '{\"roles\":[\"seller\"],\"seller\":\"acme\"}'"
	@echo "An operator's token:  curl -s 127.0.0.1:9400/token -H 'content-type: application/json' -d '{\"roles\":[\"operator\"]}'"
	@echo "  (the local issuer; use .access_token as Bearer. Machines: aliexpress keys create NAME --role ROLE [--seller S])"
	@echo "Metrics (never on the API port): serve 127.0.0.1:9463/metrics, relay :9464, command consumer :9465, projection :9466; Prometheus http://127.0.0.1:9090"
	@echo "Check it answers: make smoke"
endif

smoke: ## check the running platform answers: /health/ ok, one write made searchable
	deploy/local/smoke

down: ## stop the roles and the stack (data kept)
ifeq ($(DOCKER),yes)
	docker compose down
else
	-$(ROLES) down
	$(STACK) down
endif

restart: ## restart the application roles
ifeq ($(DOCKER),yes)
	docker compose restart api outbox-relay product-consumer product-event-consumer
else
	-$(ROLES) down
	$(ROLES) up $(BIN)
endif

observe-up-build: ## rebuild and start everything including Prometheus/Grafana
ifeq ($(DOCKER),yes)
	docker compose up -d --build
else
	$(MAKE) up
endif

stack-up: ## start only the infrastructure (native)
	$(STACK) up

stack-up-secure: ## start the infrastructure with its TLS/SASL listeners too (writes secure.env)
	$(STACK) up --secure

stack-down: ## stop only the infrastructure (native)
	$(STACK) down

backup: ## a base backup of the local stack's Postgres now (the stack also takes one every 6 h or 2 GiB of WAL and archives WAL continuously)
	$(STACK) backup

# TO=2026-12-06T10:15:00Z restores to that time; without it, to the latest point (nothing
# acknowledged is lost: the WAL archive is synchronous). docs/RUNBOOK.md, "Restoring Postgres".
restore: ensure-rust ## restore Postgres from backup (TO=time, else the latest point) and bring search and the cache back to it; the roles are stopped meanwhile
	@test -x $(BIN) || $(MAKE) release
	-$(ROLES) down
	$(STACK) restore $(if $(TO),--to $(TO))
	$(BIN) migrate
	$(BIN) post-restore --execute
	$(ROLES) up $(BIN)

status: ensure-rust ## one screen: health, backlog, lag, DLQ
	$(BIN) status

build: ensure-rust ## debug build
	cargo build --locked

release: ensure-rust ## release build
	cargo build --locked --release

test: ensure-rust ## start the stack (with its secured listeners); unit and integration tests, the short chaos suite, the contract test, the Helm chart, the alert rules, the compose file
	$(STACK) up --secure
	cargo test --locked --lib --bins --test integration -- --test-threads=4
	cargo test --locked --test chaos
	$(MAKE) contract
	$(MAKE) helm-check
	$(MAKE) rules-check
	$(MAKE) compose-config

# The binary is built the way `cargo test` builds it (dev-dependencies' features unified), so
# after `make test`'s own tests this builds nothing: one build serves the whole suite.
schemas: ensure-rust ## regenerate schemas/ (the wire's JSON Schemas) from the types; refuses an incompatible change to the current version
	UPDATE_SCHEMAS=1 cargo test --locked --lib schema::wire

contract: ensure-rust ## schemathesis against a fresh `serve` and its /openapi.json (all checks, stateful), at two seeds
	$(STACK) up
	cargo test --locked --no-run --test integration
	CONTRACT_SEED=20261128 deploy/local/schemathesis $(DEBUG_BIN)
	CONTRACT_SEED=7 CONTRACT_MAX_EXAMPLES=150 deploy/local/schemathesis $(DEBUG_BIN)

contract-long: ensure-rust ## by hand: schemathesis at a third seed with 1 000 cases per operation and phase (about 20 minutes)
	$(STACK) up
	cargo test --locked --no-run --test integration
	CONTRACT_SEED=$${CONTRACT_SEED:-424242} CONTRACT_MAX_EXAMPLES=$${CONTRACT_MAX_EXAMPLES:-1000} deploy/local/schemathesis $(DEBUG_BIN)

# Fuzzing: cargo-fuzz (libFuzzer) on the nightly toolchain, its own workspace in fuzz/ and its
# own target folder; the committed corpora are replayed on stable by `make test` (src/fuzzing.rs).
FUZZ_SECS ?= 60
FUZZ_TARGET_DIR ?= $(HOME)/.cache/aliexpress/fuzz-target
fuzz: ## coverage-guided fuzzing of every decoder (cargo-fuzz, nightly): each target for FUZZ_SECS (60) on fuzz/corpus; runs and crashes in the target folder
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	@mkdir -p $(FUZZ_TARGET_DIR)
	@for t in $$(CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo +nightly fuzz list); do \
	  echo "== fuzz $$t ($(FUZZ_SECS) s)"; \
	  CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECS) -print_final_stats=1 2>&1 \
	    | tee $(FUZZ_TARGET_DIR)/$$t.log | grep -E "Done [0-9]+ runs|stat::number_of_executed_units|SUMMARY|panicked" ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# The chaos suite's own stack: same script, its own state folder and ports, so faults (SIGSTOP,
# kill -9, restarts) never touch the default stack other work runs on.
CHAOS_STACK_ENV := ALIEXPRESS_STATE_DIR=/var/tmp/aliexpress-chaos ALIEXPRESS_PG_PORT=15432 \
	ALIEXPRESS_REDIS_PORT=16379 ALIEXPRESS_KAFKA_PORT=19092 ALIEXPRESS_KAFKA_CONTROLLER_PORT=19093 \
	ALIEXPRESS_OPENSEARCH_PORT=9250 ALIEXPRESS_PROMETHEUS_PORT=off
CHAOS_URLS := DATABASE_URL=postgres://aliexpress:aliexpress@127.0.0.1:15432/aliexpress \
	REDIS_URL=redis://:aliexpress@127.0.0.1:16379 KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092 OPENSEARCH_URL=http://127.0.0.1:9250
CHAOS_ARGS ?= --long

chaos-stack-up: ## start the chaos suite's own stack (ports 15432/16379/19092/9250)
	$(CHAOS_STACK_ENV) $(STACK) up

chaos-stack-down: ## stop the chaos suite's own stack (data kept)
	$(CHAOS_STACK_ENV) $(STACK) down

chaos: ensure-rust chaos-stack-up ## fault-injection suite, every scenario, on its own stack; table in the target dir
	$(CHAOS_STACK_ENV) $(CHAOS_URLS) cargo test --locked --test chaos -- $(CHAOS_ARGS)

# The cluster profile: 3 Kafka brokers (RF 3, min.insync.replicas 2) and 2 OpenSearch nodes, with
# its own Postgres and Redis, state folder and ports, beside the default stack
# (deploy/local/stack up --cluster). The binary's settings for it: `$(STACK) env --cluster`.
CLUSTER_ENV := ALIEXPRESS_STATE_DIR=/var/tmp/aliexpress-cluster \
	DATABASE_URL=postgres://aliexpress:aliexpress@127.0.0.1:25432/aliexpress \
	REDIS_URL=redis://:aliexpress@127.0.0.1:26379 \
	KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:29092,127.0.0.1:29192,127.0.0.1:29292 \
	OPENSEARCH_URL=http://127.0.0.1:9260 KAFKA_TOPIC_REPLICATION_FACTOR=3 OPENSEARCH_INDEX_REPLICAS=1
CLUSTER_ARGS ?=

cluster-up: ## start the cluster profile (Kafka 29092/29192/29292, OpenSearch 9260/9261, pg 25432, redis 26379)
	$(STACK) up --cluster

cluster-down: ## stop the cluster profile (data kept)
	$(STACK) down --cluster

test-cluster: ensure-rust cluster-up ## kill -9 a Kafka broker, then an OpenSearch node, under load on the cluster profile
	$(CLUSTER_ENV) cargo test --locked --test chaos -- --cluster $(CLUSTER_ARGS)

unit: ensure-rust ## unit tests only (no services)
	cargo test --locked --lib

bench: ensure-rust ## benchmarks against the real stack; prints a table
	$(STACK) up
	$(STACK) jars debezium >/dev/null
	$(STACK) jars opensearch-sink >/dev/null
	cargo build --locked --release
	bash bench/run.sh $(BIN)

bench-peer: ## only the relay vs Debezium rows of make bench (backlog events/s, publish latency)
	BENCH_ONLY=peer $(MAKE) bench

migrate: ## apply database migrations
	$(BIN) migrate

serve: ## run the API in the foreground
	$(BIN) serve

process-outbox: ## publish pending outbox rows once
	$(BIN) process-outbox

process-outbox-follow: ## run the outbox publisher as a daemon
	$(BIN) process-outbox --follow --metrics-bind 127.0.0.1:9464

run-product-consumer: ## run the write-side command consumer
	$(BIN) run-product-consumer --metrics-bind 127.0.0.1:9465

run-product-event-consumer: ## run the read-side projection consumer
	$(BIN) run-product-event-consumer --metrics-bind 127.0.0.1:9466

fmt: ## format the code
	cargo fmt --all

lint: ## clippy with warnings as errors
	cargo clippy --locked --all-targets -- -D warnings

helm-check: ## lint and render the Helm chart (default and every optional feature) and check the renders; no cluster needed
	deploy/local/helm-check

RULES := deploy/prometheus/rules/aliexpress.rules.yml

rules-check: ## the Prometheus alert rules: promtool check rules, their unit tests, the local Prometheus config that loads them
	@command -v promtool >/dev/null || { echo "promtool not found: apt-get install prometheus (deploy/local/stack installs it)" >&2; exit 1; }
	promtool check rules $(RULES)
	promtool test rules $(basename $(RULES)).test.yml
	promtool check config deploy/prometheus/prometheus.yml

compose-config: ## check docker-compose.yml and the Dockerfile: `docker compose config -q` where the compose plugin is, and the properties of deploy/compose_check.py (with its self-test)
	@if docker compose version >/dev/null 2>&1; then \
	  docker compose config -q && echo "docker compose config: ok"; \
	else \
	  echo "compose-config: no docker compose plugin here, \`docker compose config -q\` skipped" >&2; \
	fi
	python3 deploy/compose_check.py
	python3 deploy/compose_check.py --self-test
