//go:build !updatecrash

package update

// crashPoint marks a durable step of an update (a state write, a synced
// chunk, the link switch). Builds with the updatecrash tag can stop the
// process there (hwtest/otacrash).
func crashPoint(string) {}
