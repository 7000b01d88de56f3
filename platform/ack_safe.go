//go:build !kestrel_earlyack

package platform

// earlyAck is false: a message is acknowledged only after its transaction
// commits. The kestrel_earlyack build tag turns this off on purpose, so the
// end-to-end kill test (hwtest/fleetsim) can show it fails without it.
const earlyAck = false
