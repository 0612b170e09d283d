# The actor named "counter" may read and write its keys, never delete them.
#
# wasmcloud:keyvalue has no Clear; its destructive operations are Delete (a key),
# ListDelete (items of a list) and SetRemove (members of a set). Other actors are not
# restricted by this file.
package sigil.invoke

destructive := {"Delete", "ListDelete", "SetRemove"}

deny contains msg if {
	input.actor.name == "counter"
	input.contract_id == "wasmcloud:keyvalue"
	input.operation in destructive
	msg := sprintf("%s may not %s keys", [input.actor.name, input.operation])
}
