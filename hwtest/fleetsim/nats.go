package fleetsim

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// NATSCluster is a 3-node nats-server cluster with JetStream and MQTT on
// loopback, each node a process (nats-server, pinned in go.mod as a tool).
type NATSCluster struct {
	Bin   string
	Nodes []*NATSNode
}

// NATSNode is one nats-server process.
type NATSNode struct {
	Name     string
	MQTTAddr string
	conf     string
	dir      string
	p        *proc
}

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// StartNATSCluster writes the three nodes' configurations into dir and
// starts them.
func StartNATSCluster(bin, dir string) (*NATSCluster, error) {
	ports, err := freePorts(9)
	if err != nil {
		return nil, err
	}
	c := &NATSCluster{Bin: bin}
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+i]))
	}
	for i := range 3 {
		n := &NATSNode{Name: fmt.Sprintf("n%d", i+1), MQTTAddr: fmt.Sprintf("127.0.0.1:%d", ports[6+i]), dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1))}
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return nil, err
		}
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: kestrel
  listen: 127.0.0.1:%d
  routes: [%s]
}
mqtt { listen: %s }
`, n.Name, ports[i], n.dir, ports[3+i], strings.Join(routes, ", "), n.MQTTAddr)
		n.conf = filepath.Join(n.dir, "nats.conf")
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			return nil, err
		}
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		if err := c.Start(n); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// Start starts (or restarts) a node.
func (c *NATSCluster) Start(n *NATSNode) error {
	var err error
	if n.p, err = startProc(filepath.Join(n.dir, "nats.log"), c.Bin, "-c", n.conf); err != nil {
		return err
	}
	return waitTCP(n.MQTTAddr, 30*time.Second, n.p.done)
}

// Kill sends SIGKILL to a node and waits for it.
func (c *NATSCluster) Kill(n *NATSNode) { n.p.stop(syscall.SIGKILL) }

// Stop stops every node. Safe to call twice.
func (c *NATSCluster) Stop() {
	for _, n := range c.Nodes {
		c.Kill(n)
	}
}

// Log is a node's log, for failures.
func (n *NATSNode) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "nats.log"))
	return string(b)
}
