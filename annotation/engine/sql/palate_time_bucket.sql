CREATE OR REPLACE FUNCTION public.palate_time_bucket(p_ms integer)
 RETURNS integer
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    -- quality.time_bucket with quality.TIME_EDGES_MS: the number of edges <= ms.
    SELECT (p_ms >= 500)::int + (p_ms >= 1000)::int + (p_ms >= 1500)::int
         + (p_ms >= 2000)::int + (p_ms >= 3000)::int + (p_ms >= 4000)::int
         + (p_ms >= 6000)::int + (p_ms >= 8000)::int + (p_ms >= 12000)::int
         + (p_ms >= 16000)::int + (p_ms >= 24000)::int + (p_ms >= 32000)::int
         + (p_ms >= 60000)::int + (p_ms >= 120000)::int
$function$

