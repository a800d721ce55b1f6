// Command protolazy rewrites protoc-gen-go files in place for lazy
// registration (see package protolazy). Used by `make proto`.
package main

import (
	"fmt"
	"os"

	"github.com/ctr-cr/ctr-cr/internal/protolazy"
)

func main() {
	for _, p := range os.Args[1:] {
		src, err := os.ReadFile(p)
		if err == nil {
			src, err = protolazy.Rewrite(src)
		}
		if err == nil {
			err = os.WriteFile(p, src, 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "protolazy: %s: %v\n", p, err)
			os.Exit(1)
		}
	}
}
