{{/* Names. KubeRay appends suffixes (-serve-svc, -head-svc, -<hash>) to the RayService
name, so the full name is kept to 40 characters. */}}
{{- define "tiergate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "tiergate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tiergate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tiergate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tiergate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tiergate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tiergate
{{- end -}}

{{/* The Serve Service name: ours when customised, else the one KubeRay picks. */}}
{{- define "tiergate.serveServiceName" -}}
{{- if .Values.serveService.enabled -}}
{{- default (printf "%s-serve" (include "tiergate.fullname" .)) .Values.serveService.name -}}
{{- else -}}
{{- printf "%s-serve-svc" (include "tiergate.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "tiergate.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "tiergate.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}

{{/* A lower-case DNS label made from a file name: "Gateway Overview.json" -> "gateway-overview". */}}
{{- define "tiergate.fileSlug" -}}
{{- regexReplaceAll "[^a-z0-9]+" (base . | trimSuffix (ext .) | lower) "-" | trimAll "-" | trimPrefix "tiergate-" -}}
{{- end -}}

{{/* The pool mapping, as YAML: pool, else poolYaml, else the chart's deploy/pools/<poolFile>. */}}
{{- define "tiergate.pool" -}}
{{- $pool := dict -}}
{{- $source := "" -}}
{{- if .Values.pool -}}
{{- $pool = .Values.pool -}}
{{- $source = "values: pool" -}}
{{- else if .Values.poolYaml -}}
{{- $pool = fromYaml .Values.poolYaml -}}
{{- $source = "values: poolYaml" -}}
{{- else -}}
{{- $path := printf "files/pools/%s" .Values.poolFile -}}
{{- $text := .Files.Get $path -}}
{{- if not $text -}}
{{- $known := list -}}
{{- range $p, $_ := .Files.Glob "files/pools/*.y*ml" }}{{ $known = append $known (base $p) }}{{ end -}}
{{- fail (printf "poolFile %q is not shipped in the chart; pool files shipped: %s" .Values.poolFile (join ", " $known)) -}}
{{- end -}}
{{- $pool = fromYaml $text -}}
{{- $source = printf "poolFile: %s" .Values.poolFile -}}
{{- end -}}
{{- if hasKey $pool "Error" -}}
{{- fail (printf "the pool (%s) is not valid YAML: %s" $source (get $pool "Error")) -}}
{{- end -}}
{{- if not (kindIs "slice" $pool.models) -}}
{{- fail (printf "the pool (%s) has no list of models" $source) -}}
{{- end -}}
{{- $pool = deepCopy $pool -}}
{{- $auth := $pool.auth | default dict -}}
{{- if .Values.apiKeys.enabled -}}
{{- /* The chart owns auth: on, with the mounted keys file (TIERGATE_API_KEYS_FILE). */ -}}
{{- $_ := set $auth "enabled" true -}}
{{- $_ := set $pool "auth" $auth -}}
{{- else if and (ne (toString $auth.enabled) "false") (not $auth.keys_file) -}}
{{- fail (printf "apiKeys.enabled is false but the pool (%s) keeps the gateway's API-key auth on without a keys_file: enable apiKeys, set auth.keys_file in the pool, or set auth.enabled: false in the pool to run without keys" $source) -}}
{{- end -}}
{{- include "tiergate.scaleOut" (dict "root" . "pool" $pool) -}}
{{- toYaml $pool -}}
{{- end -}}

{{/*
Scale-out, written into the pool (a dict, changed in place) and checked: the ingress replicas
(serve.ingressReplicas, or max_replicas when autoscaled), the state store (state), the replicas of
autoscaled models (their max_replicas, so the gateway admits what the scaled-out model can take).
*/}}
{{- define "tiergate.scaleOut" -}}
{{- $v := .root.Values -}}
{{- $pool := .pool -}}
{{- $ingress := $v.serve.autoscaling.ingress -}}
{{- if $ingress.enabled -}}
{{- include "tiergate.checkAutoscaling" (list $ingress.config "serve.autoscaling.ingress.config") -}}
{{- $_ := set $pool "ingress_replicas" (int $ingress.config.max_replicas) -}}
{{- else if gt (int $v.serve.ingressReplicas) 0 -}}
{{- $_ := set $pool "ingress_replicas" (int $v.serve.ingressReplicas) -}}
{{- end -}}
{{- $state := deepCopy ($pool.state | default dict) -}}
{{- with $v.state.store }}{{ $_ := set $state "store" . }}{{ end -}}
{{- with $v.state.onUnavailable }}{{ $_ := set $state "on_unavailable" . }}{{ end -}}
{{- if $state }}{{ $_ := set $pool "state" $state }}{{ end -}}
{{- $store := $state.store | default "auto" -}}
{{- $replicas := int ($pool.ingress_replicas | default 1) -}}
{{- if and (eq $store "memory") (gt $replicas 1) -}}
{{- fail (printf "state.store memory keeps each ingress replica's counters apart, but the gateway has %d ingress replicas (serve.ingressReplicas, serve.autoscaling.ingress or the pool's ingress_replicas): use auto, ray or redis" $replicas) -}}
{{- end -}}
{{- $redis := or $v.state.redis.url $v.state.redis.existingSecret -}}
{{- if and (eq $store "redis") (not (or $redis $state.redis_url)) -}}
{{- fail "state.store is redis but no Redis is given: set state.redis.url or state.redis.existingSecret (or the pool's state.redis_url)" -}}
{{- end -}}
{{- if and $redis (ne $store "redis") -}}
{{- fail (printf "state.redis is set but the state store is %s, which would not use it: set state.store: redis" $store) -}}
{{- end -}}
{{- $names := list -}}
{{- range $m := $pool.models }}{{ $names = append $names $m.name }}{{ end -}}
{{- range $name, $_ := $v.serve.autoscaling.models.perModel -}}
{{- if not (has $name $names) -}}
{{- fail (printf "serve.autoscaling.models.perModel: %q is not a model of the pool (%s)" $name (join ", " $names)) -}}
{{- end -}}
{{- end -}}
{{- if $v.serve.autoscaling.models.enabled -}}
{{- range $m := $pool.models -}}
{{- $config := include "tiergate.modelAutoscaling" (dict "values" $v "name" $m.name) | fromYaml -}}
{{- $_ := set $m "replicas" (int $config.max_replicas) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A model's Serve autoscaling_config: serve.autoscaling.models.config, with its perModel fields. */}}
{{- define "tiergate.modelAutoscaling" -}}
{{- $models := .values.serve.autoscaling.models -}}
{{- $own := index ($models.perModel | default dict) .name | default dict -}}
{{- $config := merge (deepCopy $own) (deepCopy $models.config) -}}
{{- include "tiergate.checkAutoscaling" (list $config (printf "serve.autoscaling.models, model %s" .name)) -}}
{{- toYaml $config -}}
{{- end -}}

{{/* Fails unless min_replicas <= initial_replicas (when given) <= max_replicas. Called with (list config where). */}}
{{- define "tiergate.checkAutoscaling" -}}
{{- $c := index . 0 -}}
{{- $where := index . 1 -}}
{{- $min := int $c.min_replicas -}}
{{- $max := int $c.max_replicas -}}
{{- if gt $min $max -}}
{{- fail (printf "%s: min_replicas (%d) is above max_replicas (%d)" $where $min $max) -}}
{{- end -}}
{{- if not (kindIs "invalid" $c.initial_replicas) -}}
{{- if or (lt (int $c.initial_replicas) $min) (gt (int $c.initial_replicas) $max) -}}
{{- fail (printf "%s: initial_replicas (%d) is outside min_replicas..max_replicas (%d..%d)" $where (int $c.initial_replicas) $min $max) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Serve deployment overrides of serveConfigV2: the autoscaling_config of the ingress and the models. */}}
{{- define "tiergate.deployments" -}}
{{- $v := .root.Values -}}
{{- $deployments := list -}}
{{- if $v.serve.autoscaling.ingress.enabled -}}
{{- $deployments = append $deployments (dict "name" "ingress" "autoscaling_config" $v.serve.autoscaling.ingress.config) -}}
{{- end -}}
{{- if $v.serve.autoscaling.models.enabled -}}
{{- range $m := .pool.models -}}
{{- $config := include "tiergate.modelAutoscaling" (dict "values" $v "name" $m.name) | fromYaml -}}
{{- $deployments = append $deployments (dict "name" (printf "model-%s" $m.name) "autoscaling_config" $config) -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "deployments" $deployments) -}}
{{- end -}}

{{/* The Secret holding the Redis URL of the state store: the existing one, else the chart's. */}}
{{- define "tiergate.redisSecretName" -}}
{{- default (printf "%s-redis" (include "tiergate.fullname" .)) .Values.state.redis.existingSecret -}}
{{- end -}}

{{/* serveConfigV2, as JSON (a YAML subset: numbers and strings survive unchanged). */}}
{{- define "tiergate.serveConfig" -}}
{{- $app := dict "name" .Values.serve.applicationName "route_prefix" .Values.serve.routePrefix "import_path" .Values.serve.importPath -}}
{{- $pool := include "tiergate.pool" . | fromYaml -}}
{{- $_ := set $app "args" (dict "pool_config" $pool) -}}
{{- with (include "tiergate.deployments" (dict "root" . "pool" $pool) | fromYaml).deployments }}{{ $_ := set $app "deployments" . }}{{ end -}}
{{- with .Values.serve.runtimeEnv }}{{ $_ := set $app "runtime_env" . }}{{ end -}}
{{- $http := dict "host" "0.0.0.0" "port" .Values.serve.port -}}
{{- toPrettyJson (dict "proxy_location" .Values.serve.proxyLocation "http_options" $http "applications" (list $app)) -}}
{{- end -}}

{{- define "tiergate.image" -}}
{{- $root := index . 0 -}}
{{- $override := index . 1 | default dict -}}
{{- $variant := index . 2 -}}
{{- $tag := index $root.Values.image (printf "%sTag" $variant) | default (printf "%s-%s" $root.Chart.AppVersion $variant) -}}
{{- printf "%s:%s" (default $root.Values.image.repository $override.repository) (default $tag $override.tag) -}}
{{- end -}}

{{/*
A Ray pod template. Called with a dict:
  root: the chart context; group: the group's values; component: ray-head | ray-worker;
  groupName: the Ray group name; image: the image; head: true for the head.
*/}}
{{- define "tiergate.podTemplate" -}}
{{- $root := .root -}}
{{- $g := .group -}}
{{- $v := $root.Values -}}
metadata:
  labels:
    {{- /* No chart or app version here: a changed pod template makes KubeRay roll a new cluster. */}}
    {{- include "tiergate.selectorLabels" $root | nindent 4 }}
    app.kubernetes.io/part-of: tiergate
    app.kubernetes.io/component: {{ .component }}
    tiergate.io/ray-group: {{ .groupName }}
    {{- with $g.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $g.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- with $v.serviceAccountName }}
  serviceAccountName: {{ . }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  containers:
    - name: {{ .component }}
      image: {{ .image }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      {{- with $v.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        {{- if .head }}
        - {name: gcs-server, containerPort: 6379}
        - {name: dashboard, containerPort: 8265}
        - {name: client, containerPort: 10001}
        {{- end }}
        - {name: serve, containerPort: {{ $v.serve.port }}}
        - {name: metrics, containerPort: {{ $v.metrics.rayMetricsPort }}}
      {{- $resources := deepCopy ($g.resources | default dict) }}
      {{- if gt (int ($g.gpus | default 0)) 0 }}
      {{- $limits := $resources.limits | default dict }}
      {{- $_ := set $limits "nvidia.com/gpu" (int $g.gpus) }}
      {{- $_ := set $resources "limits" $limits }}
      {{- end }}
      {{- with $resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- $env := concat ($v.env | default list) ($g.env | default list) }}
      {{- if $v.apiKeys.enabled }}
      {{- $env = append $env (dict "name" "TIERGATE_API_KEYS_FILE" "value" (printf "%s/%s" (trimSuffix "/" $v.apiKeys.mountPath) $v.apiKeys.secretKey)) }}
      {{- end }}
      {{- with $v.state.redis }}
      {{- if or .url .existingSecret }}
      {{- $env = append $env (dict "name" "TIERGATE_REDIS_URL" "valueFrom" (dict "secretKeyRef" (dict "name" (include "tiergate.redisSecretName" $root) "key" .secretKey))) }}
      {{- end }}
      {{- end }}
      {{- with $env }}
      env:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - name: dshm
          mountPath: /dev/shm
        {{- if $v.apiKeys.enabled }}
        - name: api-keys
          mountPath: {{ $v.apiKeys.mountPath }}
          readOnly: true
        {{- end }}
        {{- with concat ($v.volumeMounts | default list) ($g.volumeMounts | default list) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: dshm
      emptyDir:
        medium: Memory
        {{- with $g.shmSize }}
        sizeLimit: {{ . }}
        {{- end }}
    {{- if $v.apiKeys.enabled }}
    - name: api-keys
      secret:
        secretName: {{ include "tiergate.apiKeysSecretName" $root }}
        defaultMode: 0440
    {{- end }}
    {{- with concat ($v.volumes | default list) ($g.volumes | default list) }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $g.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $g.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/* rayStartParams: the metrics port, then the group's own (string values). */}}
{{- define "tiergate.rayStartParams" -}}
{{- $params := dict "metrics-export-port" (toString .root.Values.metrics.rayMetricsPort) -}}
{{- range $k, $val := .group.rayStartParams }}{{ $_ := set $params $k (toString $val) }}{{ end -}}
{{- toYaml $params -}}
{{- end -}}
