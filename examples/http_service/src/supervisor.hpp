// supervisor.hpp: `--processes N` mode: the process becomes a supervisor of N worker processes
// (itself re-executed with --processes=1) that share the listening port through SO_REUSEPORT.
//   - a worker that exits or crashes is restarted, with exponential backoff per slot (100 ms
//     doubling to 10 s; reset once a worker has lived 30 s);
//   - a worker whose resident memory exceeds --max-rss-mb is replaced: a new one is started, then
//     the old one is drained with SIGTERM;
//   - SIGHUP restarts the workers one at a time (start the new one, then drain the old one);
//   - SIGTERM/SIGINT drains every worker (they get SIGTERM) and exits 0 once all have exited.
// The supervisor itself serves nothing and holds no request state; it logs JSON lines to stderr.
#pragma once

#include "config.hpp"

namespace service {

// Runs the supervisor until SIGTERM/SIGINT; returns the process exit status.
int run_supervisor(const config& cfg, int argc, char** argv);

}  // namespace service
