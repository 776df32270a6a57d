// Command coredns is upstream CoreDNS (github.com/coredns/coredns, pinned in go.mod) with only the
// plugins a test cluster's DNS needs: cluster names from the kubernetes plugin, a cache, health
// and readiness for the kubelet's probes, and the error and loop guards. Upstream's own main is
// the same two lines over an import of every plugin, which would pull in every cloud provider's
// SDK for nothing.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
