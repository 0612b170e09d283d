# Keep actors to the hosts meant for them: a host labelled `require_tag = "<tag>"` starts
# only actors whose claims carry that tag (sign them with `--tag <tag>`). A host without
# the label starts any actor.
#
#   [host]
#   labels = { require_tag = "payments" }
package sigil.start

deny contains msg if {
	required := input.host.labels.require_tag
	not required in input.actor.tags
	msg := sprintf("this host runs only actors tagged %q; %s is tagged %v", [required, input.actor.subject, input.actor.tags])
}
