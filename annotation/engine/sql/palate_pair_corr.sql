CREATE OR REPLACE FUNCTION public.palate_pair_corr(p_sums jsonb)
 RETURNS double precision
 LANGUAGE plpgsql
 IMMUTABLE PARALLEL SAFE
AS $function$
DECLARE
    s float8[];
    vx float8;
    vy float8;
BEGIN
    -- quality.pair_corr: Pearson's r from the sums, NULL when undefined.
    IF jsonb_typeof(p_sums) IS DISTINCT FROM 'array'
       OR jsonb_array_length(p_sums) <> 6 THEN
        RETURN NULL;
    END IF;
    s := ARRAY[(p_sums ->> 0)::float8, (p_sums ->> 1)::float8, (p_sums ->> 2)::float8, (p_sums ->> 3)::float8, (p_sums ->> 4)::float8, (p_sums ->> 5)::float8];
    IF s[1] < 3 THEN RETURN NULL; END IF;
    vx := s[1] * s[4] - s[2] * s[2];
    vy := s[1] * s[5] - s[3] * s[3];
    IF vx <= 1e-12 OR vy <= 1e-12 THEN RETURN NULL; END IF;
    RETURN (s[1] * s[6] - s[2] * s[3]) / sqrt(vx * vy);
END
$function$

