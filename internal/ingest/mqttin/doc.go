// Package mqttin ingests device events over MQTT 3.1.1 and 5.
//
// A device publishes one event per message on devices/{device_id}/{stream}; the
// payload is a bare JSON number or a JSON event object (decoded by event.ParseMQTT).
// Each message is handed to an ingest.Appender on its own; the Appender's group
// commit lets concurrent messages share an fsync. Anything else published under
// devices/ is rejected as "bad_topic"; topics outside devices/ are ordinary broker
// traffic and are not ingested.
//
// Two modes, one promise: a message is acknowledged only once its event is durable.
//
// # Embedded broker (Broker)
//
// mochi-mqtt (github.com/mochi-mqtt/server/v2) is the broker. An OnPublish hook
// parses each devices/ message on the client's read goroutine. QoS 0 and 1
// messages go on to the connection's pipe (pipeline.go): its goroutine appends
// the events queued since its last round with one Append and then answers each
// message in order, so the QoS 1 PUBACK leaves only after the fsync, and a
// client's messages in flight share it. A QoS 2 message waits for the pipe to
// be idle and is appended while mochi waits, which then writes the PUBREC.
// Accepted messages are then routed to subscribers as ordinary broker traffic.
// A client's events are stored in the order it sent them; throughput comes
// from many clients sharing group commits.
//
//	outcome                MQTT 5, QoS 1/2                  MQTT 3.1.1, QoS 1/2          QoS 0
//	durable                PUBACK/PUBREC 0x00               PUBACK/PUBREC                routed
//	bad topic              PUBACK/PUBREC 0x90               PUBACK/PUBREC, not routed    dropped
//	bad or large payload   PUBACK/PUBREC 0x99               PUBACK/PUBREC, not routed    dropped
//	storage unavailable    PUBACK/PUBREC 0x83 (no retry)    no ack, connection closed    dropped
//	sampled (pressure)     PUBACK/PUBREC 0x97               PUBACK/PUBREC, not routed    dropped
//	refused (pressure)     PUBACK/PUBREC 0x97               no ack, connection closed    dropped
//	broker closing         no ack                           no ack                       dropped
//
// Bad input can never succeed, so it is acknowledged (3.1.1 has no negative ack)
// and counted as rejected; it is not routed to subscribers. When storage fails,
// an MQTT 5 client gets a negative ack with reason 0x83 ("implementation specific
// error", reason string "storage unavailable"; 0x88 is not a valid PUBACK code):
// the client library reports the failure and the application decides whether to
// resend. An MQTT 3.1.1 client cannot be told, so it gets no ack and its
// connection is closed; on reconnect it resends the message (with a persistent
// session, as the 3.1.1 spec requires), and once storage is back it is stored and
// acknowledged. Every failed attempt counts as rejected with reason "unavailable".
//
// Under buffer pressure (BrokerOptions.Admit) an event may be kept out, and a
// 3.1.1 PUBACK still never claims more than happened. A sampled event (critical
// level: every other event of a non-critical stream) was handled: the node chose
// not to keep it and accounts for it in the loss ledger, and a resend would only
// be sampled in its turn, so it is acknowledged and not routed. A refused event
// (emergency level: low-priority streams) is one the device should keep and send
// later, so it is treated like a storage failure: no ack, connection closed, the
// client resends on reconnect (and is refused again, and counted again, until the
// level drops). MQTT 5 clients get reason 0x97 (quota exceeded) for both.
// Closing the connection loses nothing acknowledged: a connection's pipe
// answers its publishes in order, so the events before the refused one are
// stored and their PUBACKs written, and those queued after it are neither
// stored nor acknowledged. One
// exception, as for a storage failure: a client that also subscribes and has
// messages queued to it may have PUBACKs still in mochi's write buffer, lost
// with the connection; it resends those events, which the Appender
// de-duplicates only when they carry an id.
//
// # Access control
//
// One mochi hook (access.go) does it all, in every mode:
//
//   - Per-source limit: BrokerOptions.MaxConnectionsPerSource bounds the
//     connections open from one IP address (the node's default is 100,
//     mqtt.max_connections_per_source); loopback sources, the node's own
//     machine (a local proxy, holdfast bench), are not limited. The
//     listener counts a connection from accept to close; at CONNECT one
//     over the limit is refused with MQTT 5
//     0x97 (quota exceeded), 3.1.1 0x03 (server unavailable), and counted in
//     holdfast_mqtt_connections_refused_total{reason="source_limit"}.
//   - Authentication, with BrokerOptions.Guard (the node sets it with
//     security.devices or security.tls.client_ca): username = device id,
//     password = its token, checked by auth.Guard.DeviceLogin (rate limit per
//     source, the same argon2id work whether or not the device exists,
//     refusals counted in holdfast_auth_failures_total{transport="mqtt"}). A
//     client with no password and a client certificate the TLS handshake
//     verified against client_ca is the device its CN or a DNS SAN names,
//     if that device is active (auth.Guard.DeviceCert; a username, if given,
//     must be one of those names); with client_ca and no devices file the
//     certificate alone vouches for its CN. Refusals: wrong, unknown,
//     revoked or another device's credentials get 0x04 (3.1.1) / 0x86 (5)
//     "bad username or password"; none at all, or a source over its failure
//     budget (holdfast_auth_rate_limited_total, checked before anything
//     else), get 0x05 / 0x87 "not authorized". The hook writes these CONNACKs
//     itself from OnConnect: mochi's own refusal maps 0x86 to 0x05 for 3.1.1.
//     A client id is a session, kept after its connection ends (clean
//     session off): a device connecting with another device's client id is
//     refused, 0x02 (3.1.1) / 0x85 (5) "client identifier not valid", and
//     counted as client_id_in_use, so it cannot take over that session's
//     subscriptions and queued messages or knock the other device off.
//   - ACL (mochi checks it before OnPublish, so a denied message is never
//     stored): nobody publishes under the alert prefix (BrokerOptions.
//     AlertPrefix, default holdfast/alerts), with or without authentication:
//     the node publishes there through mochi's inline client, which mochi
//     does not check. An authenticated device publishes only on
//     devices/<its id>/<stream>, for a stream its entry allows
//     (auth.Device.CanSend), and subscribes only to devices/<its id>/... and
//     to the alert prefix: reading alerts is allowed, since a site's displays
//     show them (a per-device switch can come later). Denials are counted in
//     holdfast_mqtt_acl_denied_total{action,reason}.
//
// What a denied publish gets is mochi's: MQTT 5 QoS 1/2, a PUBACK/PUBREC
// 0x87 (not authorized); QoS 0, nothing (dropped); MQTT 3.1.1 QoS 1/2, which
// has no negative ack, the connection is closed without an ack (the client
// would resend a dropped-but-acked message nowhere else, and a device that
// spoofs is misconfigured or hostile). A denied subscription gets SUBACK 0x80
// (3.1.1) / 0x87 (5) for that filter; the others are granted.
//
// BrokerOptions.Auth replaces all of this with another hook (tests).
//
// # External broker (Subscriber)
//
// When a site already runs a broker, paho.mqtt.golang (github.com/eclipse/paho.mqtt.golang)
// subscribes to it as an MQTT 3.1.1 client with QoS 1, a persistent session
// (clean session off, so messages published while holdfast is away are kept by the
// broker) and manual acknowledgement: a message is acked only after its event is
// durable, and bad messages are acked (they can never succeed) and counted, as are
// messages the buffer's pressure keeps out (sampled or refused): the site's broker
// acknowledged them to the device long before, and would redeliver an unacked one
// at once, holding up the rest of the session; they are in the loss ledger. Messages
// are handled concurrently so they share group commits. When an append fails, the
// message is left unacked and the Subscriber reconnects after a backoff: handlers
// still running on the connection finish first (so their acks are sent), then it
// disconnects and connects again, and the broker redelivers everything unacked.
// This gives at-least-once delivery; an ack lost in a reconnect means a redelivery,
// which the Appender de-duplicates when the event carries an id.
//
// # Publishing
//
// Both modes publish the node's own messages (alerts, through alert.Publisher) to
// the broker devices use: Broker.Publish through mochi's inline client,
// Subscriber.Publish on the subscriber's connection, waiting for the site broker's
// PUBACK. Neither publishes to a topic it would ingest (ErrDeviceTopic).
//
// The tests drive both modes with real clients: paho.mqtt.golang for 3.1.1 and
// paho.golang (github.com/eclipse/paho.golang) for MQTT 5, and a real Mosquitto as
// the external broker.
package mqttin
