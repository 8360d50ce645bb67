{{/* Names and labels. */}}
{{- define "clawplane.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "clawplane.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "clawplane.labels" -}}
{{ include "clawplane.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "clawplane.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "clawplane.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "clawplane.fullname" .)) -}}
{{- end -}}

{{/*
Guards: values that would run Clawplane unsafely stop the install with the reason and the fix.
Included once from every template that depends on them, so `helm template` of any part fails too.
*/}}
{{- define "clawplane.guards" -}}
{{- $s := .Values.secrets -}}
{{- if and (not $s.existingSecret) (not $s.secretKey) -}}
{{- fail "no secret key: set secrets.existingSecret to a Secret holding CLAWPLANE_SECRET_KEY (key secrets.keys.secretKey), or secrets.secretKey for a try-out (openssl rand -base64 32)" -}}
{{- end -}}
{{- if and (not $s.existingSecret) (not $s.databaseUrl) -}}
{{- fail "no database: set secrets.existingSecret to a Secret holding DATABASE_URL (key secrets.keys.databaseUrl), or secrets.databaseUrl for a try-out; replicas share one PostgreSQL" -}}
{{- end -}}
{{- if and (not $s.existingSecret) $s.secretKey -}}
{{- $k := $s.secretKey | trim -}}
{{- if not (or (and (regexMatch "^[0-9a-fA-F]+$" $k) (ge (len $k) 64)) (and (regexMatch "^[A-Za-z0-9+/_-]+={0,2}$" $k) (ge (len $k) 43))) -}}
{{- fail "secrets.secretKey is shorter than 32 bytes (64 hex or 43+ base64 characters): generate one with openssl rand -base64 32" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.tls) -}}
{{- fail "public exposure without TLS: ingress.enabled needs ingress.tls (a certificate Secret for ingress.host); Clawplane serves plain HTTP and its session cookies and tokens must not cross the network in clear" -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) -}}
{{- fail "ingress.enabled needs ingress.host (the name in config.publicUrl)" -}}
{{- end -}}
{{- if ne .Values.api.service.type "ClusterIP" -}}
{{- fail (printf "public exposure without TLS: api.service.type %s publishes plain HTTP; keep ClusterIP and expose the API through ingress with ingress.tls" .Values.api.service.type) -}}
{{- end -}}
{{- if and .Values.config.publicUrl (not (hasPrefix "https://" .Values.config.publicUrl)) -}}
{{- fail (printf "config.publicUrl %s is not https: users would send passwords and tokens in clear; put TLS in front (ingress.tls) and use its https URL" .Values.config.publicUrl) -}}
{{- end -}}
{{- if and .Values.ingress.enabled (not .Values.config.publicUrl) -}}
{{- fail "ingress.enabled needs config.publicUrl (https://<ingress.host>): OIDC redirects and secure cookies are built from it" -}}
{{- end -}}
{{- if gt (int .Values.roles.reconciler.replicas) 1 -}}
{{- fail "roles.reconciler.replicas must be 1: several reconcilers would start the same sandboxes twice until per-item claims land (docs/operations/replicas.md)" -}}
{{- end -}}
{{- if and (eq .Values.config.backup.store "s3") (not .Values.config.backup.s3.bucket) -}}
{{- fail "config.backup.store is s3 but config.backup.s3.bucket is empty: name the bucket (and accessKeyId, and the secret key in the Secret)" -}}
{{- end -}}
{{- if and (eq .Values.config.backup.store "s3") (not .Values.config.backup.s3.accessKeyId) -}}
{{- fail "config.backup.store is s3 but config.backup.s3.accessKeyId is empty" -}}
{{- end -}}
{{- if and (eq .Values.config.backup.store "s3") (not $s.existingSecret) (not $s.s3SecretAccessKey) -}}
{{- fail "config.backup.store is s3 but no S3 secret key: put it in secrets.existingSecret (key secrets.keys.s3SecretAccessKey) or secrets.s3SecretAccessKey" -}}
{{- end -}}
{{- range .Values.config.extraEnv -}}
{{- if regexMatch "(SECRET|PASSWORD|TOKEN|DATABASE_URL|ACCESS_KEY)" .name -}}
{{- fail (printf "config.extraEnv %s looks like a secret: it would be stored in a ConfigMap; put it in the Secret (secrets.existingSecret) instead" .name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Egress to the Kubernetes API server (the sandbox driver). */}}
{{- define "clawplane.kubeApiEgress" -}}
- {{- if .Values.networkPolicy.kubeApi.cidrs }}
  to:
    {{- range .Values.networkPolicy.kubeApi.cidrs }}
    - ipBlock: { cidr: {{ . }} }
    {{- end }}
  {{- end }}
  ports:
    {{- range .Values.networkPolicy.kubeApi.ports }}
    - { protocol: TCP, port: {{ . }} }
    {{- end }}
{{- end -}}

{{/* HTTPS to public addresses only: no private ranges (other tenants' pods), no metadata service. */}}
{{- define "clawplane.httpsEgress" -}}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        except:
          - 10.0.0.0/8
          - 172.16.0.0/12
          - 192.168.0.0/16
          {{- range .Values.networkPolicy.egressDenyCidrs }}
          - {{ . }}
          {{- end }}
  ports:
    - { protocol: TCP, port: 443 }
{{- end -}}

{{/* The KEDA worker query: DBOS task workflows queued or running (test/helm-chart.test.ts runs its plan). */}}
{{- define "clawplane.kedaQuery" -}}
SELECT count(*) FROM dbos.workflow_status WHERE status IN ('ENQUEUED', 'PENDING') AND queue_name LIKE 'clawplane.tasks.c%'
{{- end -}}

{{/* metav1.Condition, as the API server's own types define it. */}}
{{- define "clawplane.conditionSchema" -}}
type: object
required: [type, status, lastTransitionTime, reason, message]
properties:
  type: { type: string, maxLength: 316, pattern: '^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$' }
  status: { type: string, enum: ["True", "False", Unknown] }
  observedGeneration: { type: integer, format: int64, minimum: 0 }
  lastTransitionTime: { type: string, format: date-time }
  reason: { type: string, minLength: 1, maxLength: 1024, pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$' }
  message: { type: string, maxLength: 32768 }
{{- end -}}

{{/* tier=runtimeClassName,... for CLAWPLANE_KUBE_RUNTIME_CLASSES (sorted, so the config checksum is stable). */}}
{{- define "clawplane.runtimeClasses" -}}
{{- $out := list -}}
{{- range $tier, $class := .Values.sandboxes.runtimeClasses -}}
{{- $out = append $out (printf "%s=%s" $tier (default "" $class)) -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
