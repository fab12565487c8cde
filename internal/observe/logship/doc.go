// Package logship ships pedal's slog records to an OpenTelemetry collector
// over OTLP/HTTP (protobuf), beside the JSON lines on stdout, in a way that
// cannot loop and cannot block the code that logs.
//
// # Path of a record
//
//	Handler.Handle ─▶ memory queue ─▶ writer ─▶ spool (files on disk) ─▶ sender ─▶ POST /v1/logs
//	  (convert; never    (bounded;       (batches      (bounded in bytes;     (oldest file first;
//	   blocks)            drops oldest)   → one file)   drops oldest files)    backoff on failure)
//
// Handle converts the record to an OTLP LogRecord (severity, body, attributes
// with groups as nested key-value lists, trace and span ids of the active span)
// and appends it to a bounded in-memory queue; when the queue is full the
// oldest queued record is dropped and counted. Handle never waits for the
// disk or the network. A writer goroutine turns the queue into batches
// (OTEL_BLRP_MAX_EXPORT_BATCH_SIZE records, or a byte limit, or whatever
// arrived within OTEL_BLRP_SCHEDULE_DELAY), encodes each as the
// ExportLogsServiceRequest it will be sent as, and writes it as one
// checksummed spool file. A sender goroutine POSTs the oldest file as is and
// deletes it on success; on failure it keeps the file and retries with full
// jitter backoff (internal/retry), honouring Retry-After. When a new file
// would push the spool past its byte cap, the oldest files are deleted first
// and their records counted as dropped. A process that stops leaves the spool
// for the next start, which sends it first.
//
// # Why send from disk rather than wrap the SDK's exporter
//
// The OpenTelemetry SDK (sdk/log with otlploghttp) has no disk spool, and a
// spool bolted onto it would need a second way to send: a spooled batch cannot
// go back through otlploghttp, whose Export takes sdk/log Records whose
// resource and scope cannot be set from outside the SDK, so re-sending from
// disk would mean either a lossy round trip through the SDK or a second HTTP
// client. Sending every batch from the spool gives one path: batches leave in
// the order they were logged, whether the endpoint was up or down, and the
// cap, the drops and the restart behaviour are the same in both cases. It also
// keeps the three things that would otherwise feed back into the logs out of
// the SDK's hands: otlploghttp reads the process environment directly, retries
// on its own timer for up to a minute, and reports failures to otel's global
// error handler. The cost is a small file write, rename and delete per batch
// (not synced, to leave the disk's fsyncs to the event log: a process crash
// loses nothing written; a machine crash may lose the last batches, which
// then fail their checksum and are removed, counted as corrupt when their
// header survives). OTLP's protobuf types (go.opentelemetry.io/proto/otlp) are used for
// the encoding; requests go through internal/safehttp like every outbound
// request of pedal, here with any address allowed on the endpoint's port (the
// endpoint is the operator's configuration, not a user's input).
//
// # No loop
//
// Nothing in this package logs through slog: export failures, spool errors
// and drops are written to an io.Writer (stderr), at most one line per
// ReportInterval with a count of the lines suppressed since the last one.
// FromEnv also routes otel's global error handler to such a line, since its
// default writes with the standard log package, which slog.SetDefault would
// send into the shipped logs. For the same reason never install a shipping
// logger with slog.SetDefault: net/http reports some transport events with
// log.Printf.
//
// # Delivery
//
// At least once, in order: a batch the endpoint accepted but whose answer was
// lost (a timeout, the endpoint killed mid-request, a crash before the file
// was deleted) is sent again. Only one request is in flight at a time, so a
// failure duplicates at most one batch. Every record handed to Handle ends up
// either exported (pedal_log_export_exported_records_total) or dropped
// (pedal_log_export_dropped_records_total, by reason), or is still queued or
// spooled (pedal_log_export_queue_records, pedal_log_export_spool_records).
//
// A Shipper and its Handler are safe for concurrent use. One Shipper per
// spool directory.
package logship
