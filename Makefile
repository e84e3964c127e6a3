# Convenience targets; the scripts work without make.
.PHONY: run test bench clean
run:
	bash scripts/run.sh
test:
	bash scripts/test.sh
bench:  # each script prints its figures next to its reference
	bash scripts/setup.sh test && for b in bench/bench_*.py; do echo "== $$b"; .venv/bin/python $$b || exit 1; done
clean:
	rm -rf .venv data test-artifacts .pytest_cache
