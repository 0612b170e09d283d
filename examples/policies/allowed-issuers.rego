# Only actors signed by these accounts start on this host. (The claims verification
# already refuses forged and expired modules; this narrows who may sign.)
#
# Replace the keys with your teams' account keys (`sigil-claims inspect` shows an
# actor's issuer).
package sigil.start

allowed_issuers := {
	"ACCOUNTKEYOFTHEPLATFORMTEAMGOESHEREXXXXXXXXXXXXXXXXXXXXXX",
	"ACCOUNTKEYOFTHEPAYMENTSTEAMGOESHEREXXXXXXXXXXXXXXXXXXXXXX",
}

deny contains msg if {
	not input.actor.issuer in allowed_issuers
	msg := sprintf("actor %s is signed by %s, which is not an allowed issuer on this host", [input.actor.subject, input.actor.issuer])
}
