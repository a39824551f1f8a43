// ollama_render: renders chat requests into prompts the way Ollama's /api/chat does, with the
// real Go text/template, so tests can check our Modelfile TEMPLATEs byte for byte.
//
// Written for this project from the facts of Ollama's server/routes.go (ChatHandler: the model's
// SYSTEM becomes a leading system message when the request does not start with one),
// template/template.go (Parse, Vars, Execute, collate, the template data and functions),
// thinking/template.go (how thinking tags are inferred), tools/template.go (how the tool-call
// tag is inferred) and server/images.go (capabilities from a Go template), ollama/ollama @
// fb30760996871fa9460115c753afd2c60d4ab0f7. No Ollama code is copied; only the standard library
// is used, so `go build` needs no network.
//
// stdin:  {"cases": [{"template", "system", "messages", "tools", "think", "think_level"}]}
// stdout: [{"prompt", "error", "vars", "capabilities", "thinking_tags", "tool_tag"}]
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
)

type request struct {
	Template   string    `json:"template"`
	System     string    `json:"system"`
	Messages   []message `json:"messages"`
	Tools      []tool    `json:"tools"`
	Think      *bool     `json:"think"`
	ThinkLevel string    `json:"think_level"`
}

type result struct {
	Prompt       string   `json:"prompt"`
	Error        string   `json:"error,omitempty"`
	Vars         []string `json:"vars"`
	Capabilities []string `json:"capabilities"`
	ThinkingTags []string `json:"thinking_tags"`
	ToolTag      string   `json:"tool_tag"`
}

func main() {
	var in struct {
		Cases []request `json:"cases"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	out := make([]result, len(in.Cases))
	for i, c := range in.Cases {
		out[i] = render(c)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func render(c request) (r result) {
	t, vars, err := parseTemplate(c.Template)
	r.Vars = vars
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Capabilities = capabilities(t, vars)
	open, close := inferThinkingTags(t)
	r.ThinkingTags = []string{open, close}
	r.ToolTag = toolTag(t)

	msgs := c.Messages
	if len(msgs) > 0 && msgs[0].Role != "system" && c.System != "" {
		msgs = append([]message{{Role: "system", Content: c.System}}, msgs...)
	}
	var b bytes.Buffer
	if err := execute(t, vars, &b, msgs, c.Tools, c.Think, c.ThinkLevel); err != nil {
		r.Error = err.Error()
		return r
	}
	r.Prompt = b.String()
	return r
}

// ------------------------------------------------------------------ parsing

var funcs = template.FuncMap{
	"json": func(v any) string {
		b, _ := json.Marshal(v)
		return string(b)
	},
	"currentDate":      func(args ...string) string { return time.Now().Format("2006-01-02") },
	"yesterdayDate":    func(args ...string) string { return time.Now().AddDate(0, 0, -1).Format("2006-01-02") },
	"toTypeScriptType": func(v any) string { return "any" },
}

// parseTemplate parses like Ollama: missing keys are zero values, and a template that names
// neither .Messages nor .Response gets a {{ .Response }} action appended.
func parseTemplate(s string) (*template.Template, []string, error) {
	t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(s)
	if err != nil {
		return nil, nil, err
	}
	vars := templateVars(t)
	if !contains(vars, "messages") && !contains(vars, "response") {
		resp := &parse.ActionNode{NodeType: parse.NodeAction, Pipe: &parse.PipeNode{
			NodeType: parse.NodePipe, Cmds: []*parse.CommandNode{{NodeType: parse.NodeCommand,
				Args: []parse.Node{&parse.FieldNode{NodeType: parse.NodeField, Ident: []string{"Response"}}}}}}}
		t.Tree.Root.Nodes = append(t.Tree.Root.Nodes, resp)
	}
	return t, vars, nil
}

// templateVars: every field and variable identifier of every defined template, lower-cased,
// sorted and unique.
func templateVars(t *template.Template) []string {
	set := map[string]bool{}
	for _, tt := range t.Templates() {
		if tt.Tree == nil {
			continue
		}
		walk(tt.Tree.Root, func(n parse.Node) {
			switch x := n.(type) {
			case *parse.FieldNode:
				for _, id := range x.Ident {
					set[strings.ToLower(id)] = true
				}
			case *parse.VariableNode:
				for _, id := range x.Ident {
					set[strings.ToLower(id)] = true
				}
			}
		})
	}
	vars := []string{}
	for k := range set {
		vars = append(vars, k)
	}
	sort.Strings(vars)
	return vars
}

// walk visits n and everything below it (pipes, branches, commands).
func walk(n parse.Node, fn func(parse.Node)) {
	if n == nil {
		return
	}
	fn(n)
	for _, c := range children(n) {
		walk(c, fn)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ------------------------------------------------------------------ capabilities

// capabilities as /api/show reports them for a GGUF model whose Go TEMPLATE is in use:
// completion, then tools (.Tools named), insert (.Suffix named), thinking (tags inferred).
func capabilities(t *template.Template, vars []string) []string {
	caps := []string{"completion"}
	if contains(vars, "tools") {
		caps = append(caps, "tools")
	}
	if contains(vars, "suffix") {
		caps = append(caps, "insert")
	}
	if open, close := inferThinkingTags(t); open != "" && close != "" {
		caps = append(caps, "thinking")
	}
	return caps
}

// inferThinkingTags: find a .Thinking field inside a range over .Messages; the nearest
// enclosing list's first and last text nodes, trimmed, are the opening and closing tags.
func inferThinkingTags(t *template.Template) (string, string) {
	var open, close string
	var stack []parse.Node
	var visit func(n parse.Node)
	visit = func(n parse.Node) {
		if n == nil {
			return
		}
		stack = append(stack, n)
		defer func() { stack = stack[:len(stack)-1] }()
		if f, ok := n.(*parse.FieldNode); ok && len(f.Ident) > 0 && f.Ident[0] == "Thinking" {
			if r := nearestRange(stack); r != nil && pipeNamesField(r.Pipe, "Messages") {
				for i := len(stack) - 1; i >= 0; i-- {
					if l, ok := stack[i].(*parse.ListNode); ok {
						if tn, ok := l.Nodes[0].(*parse.TextNode); ok {
							open = strings.TrimSpace(string(tn.Text))
						}
						if tn, ok := l.Nodes[len(l.Nodes)-1].(*parse.TextNode); ok {
							close = strings.TrimSpace(string(tn.Text))
						}
						break
					}
				}
			}
		}
		for _, c := range children(n) {
			visit(c)
		}
	}
	visit(t.Tree.Root)
	return open, close
}

func children(n parse.Node) []parse.Node {
	var out []parse.Node
	branch := func(b *parse.BranchNode) {
		out = append(out, b.Pipe)
		if b.List != nil {
			out = append(out, b.List)
		}
		if b.ElseList != nil {
			out = append(out, b.ElseList)
		}
	}
	switch x := n.(type) {
	case *parse.ListNode:
		out = append(out, x.Nodes...)
	case *parse.ActionNode:
		out = append(out, x.Pipe)
	case *parse.IfNode:
		branch(&x.BranchNode)
	case *parse.RangeNode:
		branch(&x.BranchNode)
	case *parse.WithNode:
		branch(&x.BranchNode)
	case *parse.PipeNode:
		for _, c := range x.Cmds {
			out = append(out, c)
		}
	case *parse.CommandNode:
		out = append(out, x.Args...)
	case *parse.TemplateNode:
		if x.Pipe != nil {
			out = append(out, x.Pipe)
		}
	case *parse.ChainNode:
		out = append(out, x.Node)
	}
	return out
}

func nearestRange(stack []parse.Node) *parse.RangeNode {
	for i := len(stack) - 1; i >= 0; i-- {
		if r, ok := stack[i].(*parse.RangeNode); ok {
			return r
		}
	}
	return nil
}

func pipeNamesField(p *parse.PipeNode, field string) bool {
	found := false
	walk(p, func(n parse.Node) {
		if f, ok := n.(*parse.FieldNode); ok && len(f.Ident) > 0 && f.Ident[0] == field {
			found = true
		}
	})
	return found
}

// toolTag: the first non-blank text inside the first {{ if .ToolCalls }}, cut before any "{"
// and trimmed; "{" when there is none (Ollama then tries every JSON object as a call).
func toolTag(t *template.Template) string {
	var found *parse.IfNode
	var search func(nodes []parse.Node)
	search = func(nodes []parse.Node) {
		for _, n := range nodes {
			if found != nil {
				return
			}
			switch x := n.(type) {
			case *parse.IfNode:
				if pipeArgNames(x.Pipe, "ToolCalls") {
					found = x
					return
				}
				searchBranch(&x.BranchNode, search)
			case *parse.ListNode:
				search(x.Nodes)
			case *parse.RangeNode:
				searchBranch(&x.BranchNode, search)
			case *parse.WithNode:
				searchBranch(&x.BranchNode, search)
			}
		}
	}
	search(t.Tree.Root.Nodes)
	if found == nil {
		return "{"
	}
	text := firstText(found.List.Nodes)
	tag := strings.ReplaceAll(text, "\r\n", "\n")
	if i := strings.Index(tag, "{"); i >= 0 {
		tag = tag[:i]
	}
	if tag = strings.TrimSpace(tag); tag == "" {
		return "{"
	}
	return tag
}

func searchBranch(b *parse.BranchNode, search func([]parse.Node)) {
	search(b.List.Nodes)
	if b.ElseList != nil {
		search(b.ElseList.Nodes)
	}
}

func pipeArgNames(p *parse.PipeNode, field string) bool {
	for _, c := range p.Cmds {
		for _, a := range c.Args {
			if f, ok := a.(*parse.FieldNode); ok && contains(f.Ident, field) {
				return true
			}
		}
	}
	return false
}

func firstText(nodes []parse.Node) string {
	// depth first; any action, or a construct without text, ends the search
	for _, n := range nodes {
		switch x := n.(type) {
		case *parse.TextNode:
			if len(bytes.TrimSpace(x.Text)) > 0 {
				return string(x.Text)
			}
		case *parse.ListNode:
			if s := firstText(x.Nodes); s != "" {
				return s
			}
		case *parse.IfNode:
			return branchText(&x.BranchNode)
		case *parse.RangeNode:
			return branchText(&x.BranchNode)
		case *parse.WithNode:
			return branchText(&x.BranchNode)
		case *parse.ActionNode:
			return ""
		}
	}
	return ""
}

func branchText(b *parse.BranchNode) string {
	if s := firstText(b.List.Nodes); s != "" {
		return s
	}
	if b.ElseList != nil {
		return firstText(b.ElseList.Nodes)
	}
	return ""
}
