// A deliberately broken release for hwtest/ota: it exits at once, before
// any health gate can run, as a binary that crashes at start would.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "broken release: exiting at start")
	os.Exit(1)
}
