package main

// How Ollama executes a template for a chat: the request types (api.Message, api.Tool as
// decoded from JSON), the template data built from them, and the two execution paths.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/template"
	"text/template/parse"
)

// ------------------------------------------------------------------ request JSON

type message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking,omitempty"`
	Images     []string   `json:"images,omitempty"`
	ToolCalls  []toolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}

type toolCall struct {
	ID       string `json:"id,omitempty"`
	Function struct {
		Index     int            `json:"index"`
		Name      string         `json:"name"`
		Arguments map[string]any `json:"arguments"`
	} `json:"function"`
}

type tool struct {
	Type     string `json:"type"`
	Items    any    `json:"items,omitempty"`
	Function struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
		Parameters  struct {
			Type       string        `json:"type"`
			Defs       any           `json:"$defs,omitempty"`
			Items      any           `json:"items,omitempty"`
			Required   []string      `json:"required,omitempty"`
			Properties *orderedProps `json:"properties"`
		} `json:"parameters"`
	} `json:"function"`
}

type toolProperty struct {
	AnyOf       []toolProperty `json:"anyOf,omitempty"`
	Type        propertyType   `json:"type,omitempty"`
	Items       any            `json:"items,omitempty"`
	Description string         `json:"description,omitempty"`
	Enum        []any          `json:"enum,omitempty"`
	Properties  *orderedProps  `json:"properties,omitempty"`
	Required    []string       `json:"required,omitempty"`
}

// propertyType: a JSON string or array of strings; one type is written back as a string.
type propertyType []string

func (p *propertyType) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*p = []string{s}
		return nil
	}
	var a []string
	if err := json.Unmarshal(b, &a); err != nil {
		return err
	}
	*p = a
	return nil
}

func (p propertyType) String() string {
	if len(p) == 1 {
		return p[0]
	}
	if len(p) == 0 {
		return ""
	}
	return fmt.Sprintf("%v", []string(p))
}

func (p propertyType) MarshalJSON() ([]byte, error) {
	if len(p) == 1 {
		return json.Marshal(p[0])
	}
	return json.Marshal([]string(p))
}

// orderedProps keeps the request's key order, as Ollama's ordered map does.
type orderedProps struct {
	keys   []string
	values map[string]toolProperty
}

func (o *orderedProps) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	o.values = map[string]toolProperty{}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return err
		}
		var v toolProperty
		if err := dec.Decode(&v); err != nil {
			return err
		}
		key := k.(string)
		if _, seen := o.values[key]; !seen {
			o.keys = append(o.keys, key)
		}
		o.values[key] = v
	}
	return nil
}

func (o orderedProps) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range o.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(o.values[k])
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// toMap: what templates see of an ordered map, a plain Go map (ranged and printed sorted).
func (o *orderedProps) toMap() map[string]toolProperty {
	if o == nil {
		return nil
	}
	m := make(map[string]toolProperty, len(o.keys))
	for _, k := range o.keys {
		m[k] = o.values[k]
	}
	return m
}

// ------------------------------------------------------------------ template data

type tmplTools []tmplTool

func (t tmplTools) String() string { return marshal(t) }

type tmplTool struct {
	Type     string           `json:"type"`
	Items    any              `json:"items,omitempty"`
	Function tmplToolFunction `json:"function"`
}

func (t tmplTool) String() string { return marshal(t) }

type tmplToolFunction struct {
	Name        string             `json:"name"`
	Description string             `json:"description"`
	Parameters  tmplToolParameters `json:"parameters"`
}

type tmplToolParameters struct {
	Type       string    `json:"type"`
	Defs       any       `json:"$defs,omitempty"`
	Items      any       `json:"items,omitempty"`
	Required   []string  `json:"required,omitempty"`
	Properties tmplProps `json:"properties"`
}

type tmplProps map[string]toolProperty

func (t tmplProps) String() string {
	if t == nil {
		return "{}"
	}
	return marshal(t)
}

type tmplArgs map[string]any

func (t tmplArgs) String() string {
	if t == nil {
		return "{}"
	}
	return marshal(t)
}

type tmplToolCall struct {
	ID       string
	Function struct {
		Index     int
		Name      string
		Arguments tmplArgs
	}
}

type tmplMessage struct {
	Role       string
	Content    string
	Thinking   string
	Images     []string
	ToolCalls  []tmplToolCall
	ToolName   string
	ToolCallID string
}

func marshal(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func toolsForTemplate(tools []tool) tmplTools {
	if tools == nil {
		return nil
	}
	out := make(tmplTools, len(tools))
	for i, t := range tools {
		out[i] = tmplTool{Type: t.Type, Items: t.Items, Function: tmplToolFunction{
			Name: t.Function.Name, Description: t.Function.Description,
			Parameters: tmplToolParameters{Type: t.Function.Parameters.Type, Defs: t.Function.Parameters.Defs,
				Items: t.Function.Parameters.Items, Required: t.Function.Parameters.Required,
				Properties: tmplProps(t.Function.Parameters.Properties.toMap())},
		}}
	}
	return out
}

func messagesForTemplate(msgs []*message) []*tmplMessage {
	if msgs == nil {
		return nil
	}
	out := make([]*tmplMessage, len(msgs))
	for i, m := range msgs {
		var calls []tmplToolCall
		for _, c := range m.ToolCalls {
			var tc tmplToolCall
			tc.ID = c.ID
			tc.Function.Index, tc.Function.Name = c.Function.Index, c.Function.Name
			tc.Function.Arguments = tmplArgs(c.Function.Arguments)
			if tc.Function.Arguments == nil {
				tc.Function.Arguments = tmplArgs{}
			}
			calls = append(calls, tc)
		}
		out[i] = &tmplMessage{Role: m.Role, Content: m.Content, Thinking: m.Thinking, Images: m.Images,
			ToolCalls: calls, ToolName: m.ToolName, ToolCallID: m.ToolCallID}
	}
	return out
}

// collate: consecutive messages of one role (tool results excepted) merge with a blank line
// between them; every system message's text is also joined into the returned system string.
func collate(msgs []message) (string, []*message) {
	var system []string
	var out []*message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if len(out) > 0 && out[len(out)-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			out[len(out)-1].Content += "\n\n" + msgs[i].Content
		} else {
			out = append(out, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), out
}

// ------------------------------------------------------------------ execution

func execute(t *template.Template, vars []string, w io.Writer, msgs []message, tools []tool,
	think *bool, level string) error {
	system, collated := collate(msgs)
	thinkData := map[string]any{"Think": think != nil && *think, "ThinkLevel": level, "IsThinkSet": think != nil}
	data := func(extra map[string]any) map[string]any {
		for k, v := range thinkData {
			extra[k] = v
		}
		return extra
	}
	if contains(vars, "messages") {
		return t.Execute(w, data(map[string]any{"System": system, "Messages": messagesForTemplate(collated),
			"Tools": toolsForTemplate(tools), "Response": ""}))
	}

	// Legacy templates (.System/.Prompt/.Response) run once per turn; the last turn is cut
	// right after {{ .Response }}, so the model continues from there.
	var b bytes.Buffer
	var sys, prompt, response string
	flush := func() error {
		err := t.Execute(&b, data(map[string]any{"System": sys, "Prompt": prompt, "Response": response}))
		sys, prompt, response = "", "", ""
		return err
	}
	for _, m := range collated {
		switch m.Role {
		case "system":
			if prompt != "" || response != "" {
				if err := flush(); err != nil {
					return err
				}
			}
			sys = m.Content
		case "user":
			if response != "" {
				if err := flush(); err != nil {
					return err
				}
			}
			prompt = m.Content
		case "assistant":
			response = m.Content
		}
	}
	cut := false
	root := cutAfterResponse(t.Tree.Root.Copy(), &cut).(*parse.ListNode)
	// Like Ollama, the cut tree runs without the extra functions and missingkey option.
	last, err := template.New("").AddParseTree("", &parse.Tree{Root: root})
	if err != nil {
		return err
	}
	if err := last.Execute(&b, data(map[string]any{"System": sys, "Prompt": prompt, "Response": response})); err != nil {
		return err
	}
	_, err = io.Copy(w, &b)
	return err
}

// cutAfterResponse keeps the first .Response field and drops every node visited after it
// (pipes whose commands lose all arguments disappear, and so do actions around them).
func cutAfterResponse(n parse.Node, cut *bool) parse.Node {
	if f, ok := n.(*parse.FieldNode); ok && contains(f.Ident, "Response") {
		*cut = true
		return n
	}
	if *cut {
		return nil
	}
	switch x := n.(type) {
	case *parse.ListNode:
		var kept []parse.Node
		for _, c := range x.Nodes {
			if k := cutAfterResponse(c, cut); k != nil {
				kept = append(kept, k)
			}
		}
		x.Nodes = kept
	case *parse.IfNode:
		cutBranch(&x.BranchNode, cut)
	case *parse.WithNode:
		cutBranch(&x.BranchNode, cut)
	case *parse.RangeNode:
		cutBranch(&x.BranchNode, cut)
	case *parse.ActionNode:
		p := cutAfterResponse(x.Pipe, cut)
		if p == nil {
			return nil
		}
		x.Pipe = p.(*parse.PipeNode)
	case *parse.PipeNode:
		var cmds []*parse.CommandNode
		for _, c := range x.Cmds {
			var args []parse.Node
			for _, a := range c.Args {
				if k := cutAfterResponse(a, cut); k != nil {
					args = append(args, k)
				}
			}
			if len(args) == 0 {
				return nil
			}
			c.Args = args
			cmds = append(cmds, c)
		}
		if len(cmds) == 0 {
			return nil
		}
		x.Cmds = cmds
	}
	return n
}

func cutBranch(b *parse.BranchNode, cut *bool) {
	// The branch's own pipe is not visited: a condition is never cut, only the lists.
	b.List = cutAfterResponse(b.List, cut).(*parse.ListNode)
	if b.ElseList != nil {
		b.ElseList = cutAfterResponse(b.ElseList, cut).(*parse.ListNode)
	}
}
