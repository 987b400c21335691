# EXION generator. The two commands a new user needs:
#   make demo   set up, generate the accelerator's Verilog, run a golden-checked RTL simulation
#   make test   set up and run the whole test suite (what CI runs)
# Everything installs into ./.venv from pyproject.toml with pip; no OS packages beyond
# python3, pip, perl, g++ and make are needed.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= 2
# pytest workers (pytest-xdist); one file per worker keeps a file's Verilator builds together.
XDIST  ?= -n $(JOBS) --dist loadfile
# the slowest tests are listed at the end of a run: the default suite must stay under 15 min.
PYTEST_ARGS ?= --durations=25
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv demo test test-long formal bench lint synth pnr fst-deps xsim regress clean distclean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev,fpga]"
	@touch $(STAMP)

venv: $(STAMP)  ## create or refresh the virtual environment

demo: $(STAMP)  ## generate Verilog and run a golden-checked RTL simulation, print a report
	$(BIN)/exion demo --out build/demo

test: $(STAMP)  ## the whole suite (RTL testbenches on Verilator included); what CI runs
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

test-long: $(STAMP)  ## the suite plus long seeded random regressions
	EXION_LONG=1 $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

formal: $(STAMP)  ## every SymbiYosys proof (fast and long), its cover run and its mutants (docs/formal.md)
	$(BIN)/exion formal --long --out build/formal

# Benchmark scripts (bench/perf_*.py; the cocotb testbenches are sim/tb_*.py).
BENCHES ?= bench/perf_dpu.py bench/perf_conmerge.py bench/perf_sdue.py bench/perf_gemm.py bench/perf_fpga.py bench/perf_workload.py bench/perf_dataflow.py bench/perf_system.py bench/perf_epre.py bench/perf_fidelity.py bench/perf_generate.py bench/perf_dsc.py bench/perf_demo.py bench/perf_ep_masks.py

bench: $(STAMP)  ## benchmarks: print figures and write JSON under build/bench (BENCHES=...)
	@set -e; for b in $(BENCHES); do echo "== $$b"; $(BIN)/python $$b; done

lint: $(STAMP)  ## ruff + verilator --lint-only -Wall on every generated top
	$(BIN)/ruff check .
	$(BIN)/exion lint --config toy
	$(BIN)/exion lint --config exion16

FPGA_CONFIG ?= toy
FAMILY ?= ecp5
TOP ?= dpu
BOARD ?= ulx3s-85f
FREQ ?= 100
PNR_CONFIG ?= fpga

synth: $(STAMP)  ## one Yosys resource table of every top, toy + exion16, ECP5 + Xilinx -> docs/fpga.md, docs/fpga_synth.json (SYNTH_TIMEOUT=minutes per run)
	$(BIN)/exion synth-table --configs toy exion16 --families ecp5 xilinx $(if $(SYNTH_TIMEOUT),--timeout $(SYNTH_TIMEOUT))

pnr: $(STAMP)  ## place and route: fmax, utilization (PNR_CONFIG=fpga TOP=dpu BOARD=ulx3s-85f FREQ=100; PNR_CONFIG=configs/toy_ecp5.toml TOP=sdue: the toy SDUE; TOP=gemm: the toy engine)
	$(BIN)/exion pnr --config $(PNR_CONFIG) --top $(TOP) --board $(BOARD) --freq $(FREQ)

fst-deps:  ## OS headers Verilator's FST waveform writer needs (Debian/Ubuntu, as root)
	apt-get update && apt-get install -y liblz4-dev zlib1g-dev

XSIM_CONFIG ?= toy
XSIM_SEEDS ?= 6
xsim: $(STAMP)  ## DPU/SDUE/CAU/EPRE/gemm benches on Icarus and Verilator, same seeds: agreement (installs iverilog)
	@if ! command -v iverilog >/dev/null; then \
	  echo "xsim: Icarus Verilog missing; installing the Debian package: apt-get install -y iverilog"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y iverilog || (apt-get update && apt-get install -y iverilog); \
	  else sudo apt-get install -y iverilog || (sudo apt-get update && sudo apt-get install -y iverilog); fi; fi
	$(BIN)/python -m exion.sim.xsim --config $(XSIM_CONFIG) --seeds $(XSIM_SEEDS)

REGRESS_CONFIG ?= toy
SEEDS ?= 100
regress: $(STAMP)  ## seeded random RTL cases of every block on a Dask LocalCluster (SEEDS=100 REGRESS_CONFIG=toy)
	$(BIN)/exion regress --block all --config $(REGRESS_CONFIG) --seeds $(SEEDS)

clean:  ## remove generated files (keeps the venv)
	rm -rf build out .pytest_cache .hypothesis

distclean: clean  ## also remove the virtual environment
	rm -rf $(VENV) *.egg-info
