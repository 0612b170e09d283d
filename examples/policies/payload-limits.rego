# At most this many bytes per request, per capability. A capability not listed here is
# limited only by the host's [limits].
package sigil.invoke

max_payload := {
	"wasmcloud:keyvalue": 65536,
	"wasmcloud:messaging": 1048576,
	"wasmcloud:blobstore": 8388608,
}

deny contains msg if {
	limit := max_payload[input.contract_id]
	input.payload_size > limit
	msg := sprintf("a %s request of %d bytes is over this host's limit of %d", [input.contract_id, input.payload_size, limit])
}
