package platform

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the ingest's Prometheus metrics, in their own registry.
type Metrics struct {
	reg            *prometheus.Registry
	messages       *prometheus.CounterVec
	redeliveries   prometheus.Counter
	decodeFailures prometheus.Counter
	rowsInserted   prometheus.Counter
	duplicates     prometheus.Counter
	writeErrors    prometheus.Counter
	lag            prometheus.Histogram
	batchSeconds   prometheus.Histogram
	queue          prometheus.Gauge
	connected      prometheus.Gauge
	keyChanges     prometheus.Counter
	unverified     prometheus.Counter
}

// NewMetrics makes the metrics and their registry (with the Go runtime's).
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kestrel_platform_messages_total",
			Help: "MQTT messages received, by channel."}, []string{"channel"}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "kestrel_platform_redeliveries_total",
			Help: "Messages the broker sent again (DUP flag set)."}),
		decodeFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "kestrel_platform_decode_failures_total",
			Help: "Messages that did not decode; each is kept whole in the rejected table."}),
		rowsInserted: prometheus.NewCounter(prometheus.CounterOpts{Name: "kestrel_platform_rows_inserted_total",
			Help: "Record rows committed for the first time."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "kestrel_platform_records_duplicate_total",
			Help: "Records received again and already stored (at-least-once delivery)."}),
		writeErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "kestrel_platform_write_errors_total",
			Help: "Transactions that failed and were retried (nothing was acknowledged)."}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kestrel_platform_ingest_lag_seconds",
			Help:    "From a record's time on the device to the commit of its row.",
			Buckets: prometheus.ExponentialBucketsRange(0.01, 3600, 80)}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kestrel_platform_transaction_seconds",
			Help:    "Duration of one batch's write transaction.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kestrel_platform_queue_messages",
			Help: "Messages received and waiting for a transaction."}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kestrel_platform_broker_connected",
			Help: "1 while the MQTT session is up."}),
		keyChanges: prometheus.NewCounter(prometheus.CounterOpts{Name: "kestrel_platform_device_key_changes_total",
			Help: "Devices flagged because they announced or signed with a key other than the enrolled one (docs/evidence.md)."}),
		unverified: prometheus.NewCounter(prometheus.CounterOpts{Name: "kestrel_platform_checkpoints_unverified_total",
			Help: "Checkpoints stored whose signature no trusted key verified (not counted as proof until re-enrolment)."}),
	}
	m.reg.MustRegister(m.messages, m.redeliveries, m.decodeFailures, m.rowsInserted, m.duplicates, m.writeErrors,
		m.lag, m.batchSeconds, m.queue, m.connected, m.keyChanges, m.unverified,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the metrics' registry, for tests and embedding.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }
