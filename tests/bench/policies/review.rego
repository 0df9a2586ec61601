# The classification review rule in Rego, for the benchmark: the same decisions and reasons as
# plugins/classification-review configured with review = "sensitive", block = "forbidden".
package review

import rego.v1

review := {"sensitive"}

block := {"forbidden"}

decision(o) := {"kind": "blocked", "reason": sprintf("resource type %s is classified `%s`, which this policy blocks", [o.resource_type, o.classification])} if {
	o.classification in block
} else := {"kind": "review-needed", "reason": sprintf("resource type %s is classified `%s`, which needs a review", [o.resource_type, o.classification])} if {
	o.classification in review
} else := {"kind": "no-review"}

decisions := [decision(o) | some o in input.orders]
