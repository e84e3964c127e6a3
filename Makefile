# Convenience targets; the scripts work without make.
.PHONY: run test bench clean
run:
	bash scripts/run.sh
test:
	bash scripts/test.sh
bench:
	bash scripts/setup.sh test && .venv/bin/python bench/run_all.py
clean:
	rm -rf .venv data test-artifacts .pytest_cache
