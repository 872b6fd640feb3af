// go_resolve NAME: the addresses Go's pure resolver (CGO_ENABLED=0, GODEBUG=netdns=go) gives
// for NAME, one per line. Exit status 0 with at least one address; 2 with the error otherwise.
//
// Built by tests/tests/dns.rs with `CGO_ENABLED=0 go build`.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go_resolve NAME")
		os.Exit(64)
	}
	resolver := &net.Resolver{PreferGo: true}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	addrs, err := resolver.LookupHost(ctx, os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for _, addr := range addrs {
		fmt.Println(addr)
	}
}
