/*
 * Control API of qatpy's simulated QAT device, exported by the simulated
 * libqat.so.4 only.  A real libqat has none of these symbols, so a dlsym of
 * qatpy_sim_version tells the shim which library it loaded.
 *
 * cffi-parseable: declarations only.  Knob and counter names are listed in
 * csrc/sim/README.md (and enumerable with qatpy_sim_name).
 */

/* Set a knob.  0 ok; -1 unknown knob or value out of range; -2 a start-time
 * knob changed while the device is started.  "fault.scope.on",
 * "fault.scope.add" / ".remove" (value: the address of a key's DMA block) and
 * "fault.scope.clear" scope the per-request faults to requests using those
 * keys (a test hook, see knobs.c). */
int qatpy_sim_set(const char *knob, long long value);

/* Read a knob or a counter.  0 ok; -1 unknown name. */
int qatpy_sim_get(const char *name, long long *out);

/* Knobs back to their defaults (environment included), counters and the
 * replay cache cleared.  -1 (nothing changed) while the device is started. */
int qatpy_sim_reset(void);

/* "qatpy-sim <version>". */
const char *qatpy_sim_version(void);

/* The i-th knob or counter name (knobs first), NULL past the end. */
const char *qatpy_sim_name(int i);

/* Put instance `index` through a reset now: notification RESTARTING, submits
 * return RESTARTING and pending work completes with FAIL for restart_ms, then
 * RESTARTED.  0 ok; -1 no such live instance or already restarting. */
int qatpy_sim_restart_instance(int index);

/* While knob mem.quarantine is 1, freed DMA blocks stay mapped: returns the
 * number of non-zero bytes left in the freed block that started at p, or -1
 * if no quarantined block starts there. */
long long qatpy_sim_mem_freed_nonzero(const void *p);
