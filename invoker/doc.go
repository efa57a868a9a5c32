// Package invoker turns sockfaas's parts into a service: a function
// registry, an Invoker that routes calls to instances, and the HTTP APIs in
// front of it. Another Go program uses it without the CLI:
//
//	inv, err := invoker.New(ctx, invoker.WithLogger(log))
//	fn, err := inv.Deploy(ctx, "hello", invoker.FromDir("/srv/hello"))
//	res, err := inv.Invoke(ctx, "hello", []byte(`{"name":"you"}`), invoker.InvokeOptions{})
//	http.ListenAndServe("127.0.0.1:8088", invoker.NewHandler(inv))
//
// # Routing
//
// Invoke takes, in order: a warm idle instance of the function's version
// (pool.Handlers), a paused one (resumed), or a new one: a ready sandbox from
// the generic cache (pool.Generic; root stitched, cgroup taken) gets the
// function's code bound at /code and a network, and the deepest zygote
// whose packages the function requires forks an instance into it; if that
// fails, a fresh interpreter starts in the sandbox instead. Result.Start
// says which. Per-function (manifest MaxConcurrency) and global limits with
// a bounded queue turn excess load into ErrOverloaded; a call that runs past
// the function's timeout kills its instance (ErrTimeout); an instance that
// dies mid-call is discarded (ErrFunctionCrashed) and the invoker carries on.
// Idle instances are paused after WithPauseAfter, off the request path, and
// evicted under WithMemoryBudget, paused ones first.
//
// # Between functions, and between hosts
//
// A function calls another with the SDK that ships with the runtime
// (sockfaas.invoke, sockfaas.invoke_async) over a Unix socket the invoker
// binds into its sandbox: the local queue of SAND's hierarchical queue.
// Calls carry a Trace (caller, depth, deadline); chains deeper than
// WithMaxCallDepth fail with ErrCallDepth; the callee inherits the caller's
// remaining time. Asynchronous events are delivered at least once, with
// retries (WithAsyncRetry) and a bounded dead-letter list (DeadLetters).
//
// An Upstream (WithUpstream) is the global queue: it takes the calls and
// events for functions not deployed here (from functions and from outside)
// and the calls this host has no room for, delivers to this host those of
// the functions it serves, and keeps a backup copy of each event this host
// runs itself until its outcome is final, so that another host runs it if
// this one dies. NoUpstream is the default (one host); package natsgw is
// the NATS implementation.
//
// # HTTP
//
// NewHandler serves the native API (/v1/functions..., /v1/invocations/{id},
// /v1/status), AWS Lambda's Invoke API (/2015-03-31/functions/{name}/
// invocations), OpenLambda's /run/{name}, /healthz and Prometheus /metrics,
// over any Service; every error is mapped to a status code in one place.
//
// # The registry
//
// Registry keeps deployed functions, their code and Manifest, in a
// directory it owns, so that they survive a restart.
//
// # Deploying
//
// Registry.Deploy takes code from a directory (FromDir) or an uploaded
// .tar.gz (FromArchive), copies it into the registry, checks it and makes
// it a new version of the function: version 1 for a new name, the next one
// for an existing name; a few older versions are kept (WithKeepVersions).
// The checks are the ones that can be made before anything runs: the name,
// the archive's entries (no absolute names, "..", links, devices, FIFOs or
// setuid bits), size and file-count limits, the manifest, that the
// handler's module exists and seems to define the handler, and that every
// requirement is installed (sockfaas installs nothing at run time; see
// zygote.Resolve). Bad input is refused with an error wrapping ErrInvalid
// or ErrTooLarge and leaves the registry as it was.
//
// # On disk
//
//	<dir>/lock                                      flock: one owner process
//	<dir>/functions/<name>/<version>/code/          the code, read-only
//	<dir>/functions/<name>/<version>/function.json  name, version, manifest, imports, digest
//	<dir>/tmp/                                      staging; emptied on open
//	<dir>/runtime/                                  zygote's runtime, for the default resolver
//
// A version is staged under tmp/ and appears by one rename once complete
// and synced; removals rename out of functions/ first. So a crash leaves
// complete versions and debris under tmp/, which OpenRegistry removes.
//
// The registry never runs function code, and never touches sandboxes,
// zygotes or the code directories of versions it handed out other than to
// remove them when they are pruned or removed.
package invoker
