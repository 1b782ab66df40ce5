package jwtauth

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzObjectMembers checks the hand-written member scanner against
// encoding/json: on any valid JSON object, it yields exactly the members
// json.Unmarshal sees, each value byte-identical once compacted, and it
// reports a duplicate exactly when there is one.
func FuzzObjectMembers(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a":"x\"}","b":[1,{"c":"]"}],"d":null}`, `{"a":1,"a":2}`,
		`{"a":1,"\u0061":2}`, ` { "a" : { "b" : [ ] } , "c" : -1.5e3 } `, `[]`, `"s"`, `{"a":"\\"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if !json.Valid(b) {
			return
		}
		got := map[string]json.RawMessage{}
		var order []string
		err := objectMembers(b, func(k string, v []byte) error {
			k = string(bytes.Clone([]byte(k)))
			got[k] = json.RawMessage(bytes.Clone(v))
			order = append(order, k)
			return nil
		})
		var want map[string]json.RawMessage
		werr := json.Unmarshal(b, &want)
		if werr != nil || want == nil { // not an object
			if err == nil {
				t.Fatalf("accepted a non-object: %q", b)
			}
			return
		}
		if len(order) != len(got) { // a duplicate slipped through
			t.Fatalf("duplicate not reported in %q", b)
		}
		if err != nil {
			// Must be a real duplicate: encoding/json merged members.
			n := 0
			dec := json.NewDecoder(bytes.NewReader(b))
			_, _ = dec.Token()
			for dec.More() {
				if _, err := dec.Token(); err != nil {
					t.Fatal(err)
				}
				var skip json.RawMessage
				if err := dec.Decode(&skip); err != nil {
					t.Fatal(err)
				}
				n++
			}
			if n == len(want) {
				t.Fatalf("rejected %q (%v) without a duplicate", b, err)
			}
			return
		}
		if len(got) != len(want) {
			t.Fatalf("members %v, encoding/json %v", got, want)
		}
		for k, v := range want {
			var a, c bytes.Buffer
			_ = json.Compact(&a, v)
			_ = json.Compact(&c, got[k])
			if !bytes.Equal(a.Bytes(), c.Bytes()) {
				t.Fatalf("member %q = %s, encoding/json %s", k, got[k], v)
			}
		}
	})
}
