// Package invoker turns sockfaas's parts into a service. So far it holds
// the function registry: Registry keeps deployed functions, their code and
// Manifest, in a directory it owns, so that they survive a restart.
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
